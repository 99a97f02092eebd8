//! Routes: which request goes to which handler, and the telemetry around
//! every request. Each path answers its own methods and a 405 with `Allow`
//! for the rest; unknown paths fall through to the one `recover`.

use std::convert::Infallible;
use std::sync::Arc;

use warp::http::HeaderMap;
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::error::{self, ApiError};
use crate::handlers::{self, State};
use crate::metrics::RequestInfo;
use crate::startup::Peer;

/// The whole application: every route, errors, metrics and access log.
pub fn app(state: Arc<State>) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let metrics = Arc::clone(&state.metrics);
    let api = root(Arc::clone(&state))
        .or(healthz())
        .unify()
        .or(metrics_route(state))
        .unify()
        .recover(error::recover)
        .unify();
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
fn root(state: Arc<State>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
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
        .and_then(handlers::sort);
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
fn healthz() -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("healthz").and(
        warp::get()
            .map(handlers::health)
            .or(method_not_allowed("GET"))
            .unify(),
    )
}

/// `GET /metrics`.
fn metrics_route(
    state: Arc<State>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
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
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    warp::any().map(move || ApiError::MethodNotAllowed { allow }.into_response())
}
