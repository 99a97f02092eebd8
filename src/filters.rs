//! Routes: which request goes to which handler, and the telemetry around
//! every request. Each path answers its own methods and a 405 with `Allow`
//! for the rest; unknown paths fall through to `recover`. Every route gives
//! an [`Answer`], and [`error::respond`] alone makes it a response.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use warp::http::HeaderMap;
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::error::{self, Answer, ApiError};
use crate::handlers::{self, State};
use crate::metrics::RequestInfo;

/// The TCP peer of a request, as a request extension that the server puts
/// in (for the access log); a unix socket's peer has no address.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// The whole application: every route, errors, metrics and access log.
pub fn app(state: Arc<State>) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let metrics = Arc::clone(&state.metrics);
    let api = root_route(Arc::clone(&state))
        .or(healthz_route())
        .unify()
        .or(metrics_route(state))
        .unify()
        .recover(error::recover)
        .unify()
        .map(error::respond);
    warp::any()
        .map(move || metrics.start())
        .and(warp::method())
        .and(warp::path::full())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<Peer>().map(|peer: Option<Peer>| peer.map(|Peer(addr)| addr)))
        .and(api)
        .map(
            |in_flight: crate::metrics::InFlight,
             method,
             path: warp::path::FullPath,
             headers: HeaderMap,
             peer,
             response| {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
                };
                let request = RequestInfo {
                    method,
                    path: path.as_str().to_owned(),
                    request_id: header("x-request-id"),
                    real_ip: header("x-real-ip"),
                    peer,
                };
                let mut response = in_flight.finish(request, response);
                // Which build answered: told apart during a rolling upgrade.
                response.headers_mut().insert(
                    "x-sortd-version",
                    warp::http::HeaderValue::from_static(crate::VERSION),
                );
                response
            },
        )
}

fn with_state(
    state: Arc<State>,
) -> impl Filter<Extract = (Arc<State>,), Error = Infallible> + Clone {
    warp::any().map(move || Arc::clone(&state))
}

/// `/`: POST sorts, GET explains.
fn root_route(state: Arc<State>) -> impl Filter<Extract = (Answer,), Error = Rejection> + Clone {
    // POST / with a JSON body (any Content-Type: `curl -d` sends a form type).
    let sort = warp::post()
        .and(with_state(Arc::clone(&state)))
        .and(
            warp::query::raw()
                .map(Some)
                .or(warp::any().map(|| None))
                .unify(),
        )
        .and(warp::header::optional::<u64>("content-length"))
        .and(warp::body::stream())
        .then(handlers::sort);
    // GET / answers a usage document.
    let usage = warp::get()
        .and(with_state(state))
        .map(|state: Arc<State>| handlers::usage(&state));
    warp::path::end().and(
        sort.or(usage)
            .unify()
            .or(method_not_allowed("GET, POST"))
            .unify(),
    )
}

/// `GET /healthz`.
fn healthz_route() -> impl Filter<Extract = (Answer,), Error = Rejection> + Clone {
    warp::path!("healthz").and(
        warp::get()
            .map(handlers::healthz)
            .or(method_not_allowed("GET"))
            .unify(),
    )
}

/// `GET /metrics`.
fn metrics_route(state: Arc<State>) -> impl Filter<Extract = (Answer,), Error = Rejection> + Clone {
    warp::path!("metrics").and(
        warp::get()
            .and(with_state(state))
            .map(|state: Arc<State>| handlers::metrics(&state))
            .or(method_not_allowed("GET"))
            .unify(),
    )
}

/// Any other method on a known path: 405 with the allowed ones.
fn method_not_allowed(
    allow: &'static str,
) -> impl Filter<Extract = (Answer,), Error = Infallible> + Clone {
    warp::any().map(move || Err(ApiError::MethodNotAllowed { allow }))
}
