//! Request handlers: one function per route, giving an [`Answer`]: the
//! response, or the [`ApiError`] that `error::respond` answers. Errors are
//! answered, never rejected: a rejection would make warp try the other
//! routes and fold this error into theirs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use tokio::time::Instant;
use warp::http::StatusCode;

use crate::budget::{Budget, Reservation, SMALL_BODY_BYTES};
use crate::config::Config;
use crate::error::{Answer, ApiError};
use crate::input::parse_body;
use crate::metrics::Metrics;
use crate::reply::{bytes_response, json_response, JSON};
use crate::sort::Order;

/// Bodies larger than this are parsed and sorted on the blocking pool, so a
/// big sort never stalls the threads that serve other connections.
const BLOCKING_THRESHOLD: usize = SMALL_BODY_BYTES as usize;

/// What of a refused body is still read, and dropped, after its 413 is sent:
/// a client that sends its whole body before it reads (no `Expect:
/// 100-continue`) then reads the 413 instead of a reset connection. Bounded
/// in bytes and time; past either the connection is closed.
const DRAIN_MAX_BYTES: u64 = 64 * 1024 * 1024;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What every handler shares.
pub struct State {
    pub config: Config,
    pub metrics: Arc<Metrics>,
    /// The body bytes all requests in flight may hold together.
    pub budget: Arc<Budget>,
}

#[derive(Debug, Default, Deserialize)]
struct SortParams {
    #[serde(default)]
    order: Order,
}

/// A request's work, which stops once its deadline has passed or once its
/// handler was dropped (hyper drops it when the client's connection closes:
/// no one would read the answer). The blocking work checks between its steps
/// (parse, sort, write), so what is wasted is at most one step.
#[derive(Clone)]
struct Work {
    deadline: Instant,
    seconds: u64,
    abandoned: Arc<AtomicBool>,
}

/// Held by the handler: when the handler ends, dropping this marks its
/// `Work` abandoned.
struct AbandonOnDrop(Arc<AtomicBool>);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Work {
    fn new(timeout: Duration) -> (Self, AbandonOnDrop) {
        let abandoned = Arc::new(AtomicBool::new(false));
        let work = Work {
            deadline: Instant::now() + timeout,
            seconds: timeout.as_secs(),
            abandoned: Arc::clone(&abandoned),
        };
        (work, AbandonOnDrop(abandoned))
    }

    /// Whether the work may go on: `ClientGone` once it was abandoned,
    /// `Timeout` once its deadline has passed.
    fn check(&self) -> Result<(), ApiError> {
        if self.abandoned.load(Ordering::Relaxed) {
            return Err(ApiError::ClientGone);
        }
        if Instant::now() >= self.deadline {
            return Err(ApiError::Timeout {
                seconds: self.seconds,
            });
        }
        Ok(())
    }
}

/// `POST /`: sorts the numbers of the body.
pub async fn sort<S, B>(
    state: Arc<State>,
    query: Option<String>,
    content_length: Option<u64>,
    body: S,
) -> Answer
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin + Send + 'static,
    B: Buf + Send,
{
    let params: SortParams = serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
        .map_err(|error| ApiError::BadQuery(error.to_string()))?;
    let timeout = state.config.request_timeout;
    let (work, _abandon_on_drop) = Work::new(timeout);
    // Held until the answer is made: the body, its numbers and the JSON.
    let mut reservation = state.budget.reservation();
    let reading = read_body(
        body,
        content_length,
        state.config.max_body_bytes,
        &mut reservation,
    );
    let body = tokio::time::timeout_at(work.deadline, reading)
        .await
        .map_err(|_| ApiError::BodyTimeout {
            seconds: timeout.as_secs(),
        })??;
    let max_numbers = state.config.max_numbers;
    let blocking = body.len() > BLOCKING_THRESHOLD;
    let metrics = Arc::clone(&state.metrics);
    let observed = move || {
        let stopped =
            |error: &ApiError| matches!(error, ApiError::Timeout { .. } | ApiError::ClientGone);
        metrics.observe_sort(
            || sort_body(body, max_numbers, params.order, &work),
            stopped,
        )
    };
    let (count, json) = if blocking {
        tokio::task::spawn_blocking(observed)
            .await
            .map_err(|error| {
                log::error!("sort task failed: {error}");
                ApiError::Internal
            })??
    } else {
        observed()?
    };
    state.metrics.add_sorted(count);
    drop(reservation);
    Ok(bytes_response(StatusCode::OK, JSON, json))
}

/// Parses, sorts and serialises; returns how many numbers and the JSON.
/// The body is dropped before the answer is written, so a request's memory
/// peaks at about its body plus its numbers, never body plus answer. Stops
/// between steps once `work` should not go on.
fn sort_body(
    body: Bytes,
    max_numbers: usize,
    order: Order,
    work: &Work,
) -> Result<(usize, Vec<u8>), ApiError> {
    work.check()?;
    let mut numbers = parse_body(&body, max_numbers)?;
    let capacity = body.len() + 32;
    drop(body);
    work.check()?;
    numbers.sort(order);
    work.check()?;
    let mut json = Vec::with_capacity(capacity);
    json.extend_from_slice(br#"{"sorted_list":"#);
    numbers.write_json(&mut json);
    json.push(b'}');
    Ok((numbers.count(), json))
}

/// Reads the body into memory, refusing it as soon as it is known to exceed
/// `limit`: at once from `Content-Length`, or while reading a chunked body.
/// The rest of a refused body is drained in the background (see
/// [`DRAIN_MAX_BYTES`]) while the 413 (or 503) goes out. Before any byte is kept,
/// `reservation` covers it: all of `Content-Length` at once, or a chunked
/// body as it grows.
async fn read_body<S, B>(
    mut body: S,
    content_length: Option<u64>,
    limit: u64,
    reservation: &mut Reservation,
) -> Result<Bytes, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin + Send + 'static,
    B: Buf + Send,
{
    let too_large = ApiError::BodyTooLarge { limit };
    if content_length.is_some_and(|length| length > limit) {
        drain(body);
        return Err(too_large);
    }
    if let Err(spent) = reservation.cover(content_length.unwrap_or(0)).await {
        drain(body);
        return Err(spent.into());
    }
    let mut buffer = BytesMut::with_capacity(content_length.unwrap_or(0) as usize);
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|error| ApiError::BodyRead(error.to_string()))?;
        let size = (buffer.len() + chunk.remaining()) as u64;
        if size > limit {
            drain(body);
            return Err(too_large);
        }
        if let Err(spent) = reservation.cover(size).await {
            drain(body);
            return Err(spent.into());
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            buffer.extend_from_slice(part);
            let read = part.len();
            chunk.advance(read);
        }
    }
    Ok(buffer.freeze())
}

/// Reads and drops what is left of a refused body, up to `DRAIN_MAX_BYTES`
/// and `DRAIN_TIMEOUT`, in a task of its own: the connection stays readable
/// while the answer is written, and closes when the body is dropped.
fn drain<S, B>(mut body: S)
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin + Send + 'static,
    B: Buf + Send,
{
    tokio::spawn(async move {
        let mut left = DRAIN_MAX_BYTES;
        let reading = async {
            while let Some(Ok(chunk)) = body.next().await {
                match left.checked_sub(chunk.remaining() as u64) {
                    Some(rest) => left = rest,
                    None => break,
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, reading).await;
    });
}

/// `GET /`: how to call the API.
pub fn usage(state: &State) -> Answer {
    let usage = serde_json::json!({
        "service": "sortd",
        "usage": "POST / with a JSON object whose values are numbers or lists of numbers, as JSON or in strings; the answer is {\"sorted_list\": [...]} in ascending order",
        "examples": [
            {"request": {"x1": "5", "x2": "7"}, "response": {"sorted_list": [5, 7]}},
            {"request": {"x1": "[5, 3, 9]", "x2": "4"}, "response": {"sorted_list": [3, 4, 5, 9]}},
            {"request": {"x1": 2.5, "x2": [3, 1]}, "response": {"sorted_list": [1, 2.5, 3]}},
            {"request": [3, 1, 2], "response": {"sorted_list": [1, 2, 3]}}
        ],
        "query": {"order": "asc (default) or desc"},
        "limits": {
            "max_body_bytes": state.config.max_body_bytes,
            "max_numbers": state.config.max_numbers
        },
        "errors": "4xx with {\"error\": {\"status\", \"code\", \"message\", \"key\"?, \"position\"?}}",
        "endpoints": {"GET /healthz": "health", "GET /metrics": "Prometheus metrics"}
    });
    Ok(json_response(StatusCode::OK, &usage)?)
}

/// `GET /healthz`: for load balancers and deployment checks. Which build
/// answers is in every answer's `X-Sortd-Version` header, never in a body:
/// a load balancer in front hides the header from the public.
pub fn healthz() -> Answer {
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({"status": "ok"}),
    )?)
}

/// `GET /metrics`: the Prometheus text format.
pub fn metrics(state: &State) -> Answer {
    Ok(bytes_response(
        StatusCode::OK,
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        state.metrics.encode().into_bytes(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> Bytes {
        Bytes::from_static(b"[3, 1, 2]")
    }

    #[test]
    fn work_goes_on_within_its_time_while_its_handler_lives() {
        let (work, _abandon_on_drop) = Work::new(Duration::from_secs(60));
        let (count, json) = sort_body(body(), 10, Order::Asc, &work).unwrap();
        assert_eq!(
            (count, json.as_slice()),
            (3, &br#"{"sorted_list":[1,2,3]}"#[..])
        );
    }

    #[test]
    fn work_stops_once_its_handler_is_dropped() {
        let (work, abandon_on_drop) = Work::new(Duration::from_secs(60));
        drop(abandon_on_drop);
        let stopped = sort_body(body(), 10, Order::Asc, &work);
        assert!(matches!(stopped, Err(ApiError::ClientGone)));
    }

    #[test]
    fn the_answer_is_allocated_once_at_about_the_bodys_size() {
        // Integers are written as they were read, and the spaces go: the
        // answer fits in its body's size plus the wrapper, one allocation
        // of that size and not more.
        let text: String = format!(
            "[{}]",
            (0..10_000)
                .rev()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let (work, _abandon_on_drop) = Work::new(Duration::from_secs(60));
        let (_, json) = sort_body(Bytes::from(text.clone()), 20_000, Order::Asc, &work).unwrap();
        assert!(
            json.len() <= text.len() + 32,
            "{} > {} + 32",
            json.len(),
            text.len()
        );
        assert_eq!(json.capacity(), text.len() + 32);
    }

    #[tokio::test(start_paused = true)]
    async fn work_stops_at_its_deadline() {
        let (work, _abandon_on_drop) = Work::new(Duration::from_secs(2));
        tokio::time::advance(Duration::from_secs(2)).await;
        let stopped = sort_body(body(), 10, Order::Asc, &work);
        assert!(matches!(stopped, Err(ApiError::Timeout { seconds: 2 })));
    }
}
