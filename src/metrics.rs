//! Prometheus metrics and the per-request access log: both are written when
//! a request ends, from the same observation.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use warp::http::Method;
use warp::reply::Response;

use crate::memory::{cgroup_limit_bytes, resident_bytes};
use crate::reply::content_length;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

/// The service's metrics, registered once at start-up: sortd's own under
/// `sortd_`, and the process's under the names every Prometheus client
/// library gives them (`process_*`), which dashboards and rules expect.
pub struct Metrics {
    registry: Registry,
    resident_memory: Gauge,
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Histogram>,
    numbers_sorted: Counter,
    in_flight: Gauge,
    abandoned: Counter,
    sorts_in_progress: Gauge,
    sorts_stopped: Counter,
    memory_trims: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut root = Registry::default();
        let resident_memory = Gauge::default();
        root.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            resident_memory.clone(),
        );
        let start_time = Gauge::<f64, AtomicU64>::default();
        start_time.set(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |since| since.as_secs_f64()),
        );
        root.register(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds",
            start_time,
        );
        let registry = root.sub_registry_with_prefix("sortd");
        if let Some(limit) = cgroup_limit_bytes() {
            let gauge: Gauge = Gauge::default();
            gauge.set(i64::try_from(limit).unwrap_or(i64::MAX));
            registry.register(
                "memory_limit_bytes",
                "The memory limit of sortd's cgroup (the unit's MemoryMax=); absent without one",
                gauge,
            );
        }
        let requests = Family::<RequestLabels, Counter>::default();
        // 5 µs to ~10 s: a tiny sort to a 16 MiB body on a busy machine. Fine at the bottom, so that a release 5 times slower on
        // tiny sorts moves their p99 (a canary is judged on it).
        let duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000005, 2.0, 22))
        });
        let numbers_sorted = Counter::default();
        let in_flight = Gauge::default();
        let abandoned = Counter::default();
        let sorts_in_progress = Gauge::default();
        let sorts_stopped = Counter::default();
        let memory_trims = Counter::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route, method and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from request to response, by route",
            duration.clone(),
        );
        registry.register(
            "numbers_sorted",
            "Numbers sorted in successful requests",
            numbers_sorted.clone(),
        );
        registry.register(
            "http_requests_in_flight",
            "Requests being handled now",
            in_flight.clone(),
        );
        registry.register(
            "http_requests_abandoned",
            "Requests whose client went away before the answer; their work was stopped",
            abandoned.clone(),
        );
        registry.register(
            "sorts_in_progress",
            "Sorts being parsed, sorted or written now",
            sorts_in_progress.clone(),
        );
        registry.register(
            "sorts_stopped",
            "Sorts stopped between their steps: past the request's deadline, or its client gone",
            sorts_stopped.clone(),
        );
        registry.register(
            "memory_trims",
            "Times sortd gave its free memory back to the system, while idle after a large body",
            memory_trims.clone(),
        );
        Metrics {
            registry: root,
            resident_memory,
            requests,
            duration,
            numbers_sorted,
            in_flight,
            abandoned,
            sorts_in_progress,
            sorts_stopped,
            memory_trims,
        }
    }
}

impl Metrics {
    /// The registry in the Prometheus/OpenMetrics text format.
    pub fn encode(&self) -> String {
        if let Some(bytes) = resident_bytes() {
            self.resident_memory
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            log::error!("could not encode metrics: {error}");
        }
        text
    }

    /// The counter that `Budget::trim_when_idle` counts its trims in.
    pub fn memory_trims(&self) -> Counter {
        self.memory_trims.clone()
    }

    pub fn add_sorted(&self, count: usize) {
        self.numbers_sorted.inc_by(count as u64);
    }

    /// Counts a sort in `sorts_in_progress` while `sort` runs, and in
    /// `sorts_stopped` when it says it stopped.
    pub fn observe_sort<T, E>(
        &self,
        sort: impl FnOnce() -> Result<T, E>,
        stopped: impl Fn(&E) -> bool,
    ) -> Result<T, E> {
        self.sorts_in_progress.inc();
        let result = sort();
        self.sorts_in_progress.dec();
        if result.as_ref().is_err_and(stopped) {
            self.sorts_stopped.inc();
        }
        result
    }

    /// Starts observing a request; the observation ends with
    /// [`InFlight::finish`], or, if the request is dropped before (its
    /// client went away), counts it as abandoned.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.inc();
        InFlight {
            metrics: Arc::clone(self),
            started: Instant::now(),
            finished: false,
        }
    }
}

/// What the access log line says about the client side of a request.
pub struct RequestInfo {
    pub method: Method,
    pub path: String,
    pub request_id: Option<String>,
    pub real_ip: Option<String>,
    pub peer: Option<std::net::SocketAddr>,
}

/// A request being handled: counted in `http_requests_in_flight` until dropped.
pub struct InFlight {
    metrics: Arc<Metrics>,
    started: Instant,
    finished: bool,
}

impl InFlight {
    /// Records the finished request in the metrics and writes its access line.
    pub fn finish(mut self, request: RequestInfo, response: Response) -> Response {
        self.finished = true;
        let elapsed = self.started.elapsed();
        let status = response.status().as_u16();
        let route = route_of(&request.path);
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                route,
                method: method_of(&request.method),
                status,
            })
            .inc();
        self.metrics
            .duration
            .get_or_create(&RouteLabels { route })
            .observe(elapsed.as_secs_f64());
        log::info!(
            target: "sortd::access",
            "{} {} {} {}B {:.3}ms request_id={} real_ip={} peer={}",
            request.method,
            request.path,
            status,
            content_length(&response),
            elapsed.as_secs_f64() * 1000.0,
            request.request_id.as_deref().unwrap_or("-"),
            request.real_ip.as_deref().unwrap_or("-"),
            request.peer.map_or_else(|| "-".to_owned(), |p| p.to_string()),
        );
        response
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.metrics.in_flight.dec();
        if !self.finished {
            self.metrics.abandoned.inc();
            log::info!(
                target: "sortd::access",
                "client went away after {:.3}ms; its request was dropped",
                self.started.elapsed().as_secs_f64() * 1000.0
            );
        }
    }
}

/// The route label: known paths by name, everything else as one value so
/// that scanners cannot blow up the metric's cardinality.
fn route_of(path: &str) -> &'static str {
    match path {
        "/" => "/",
        "/healthz" => "/healthz",
        "/metrics" => "/metrics",
        _ => "unmatched",
    }
}

/// The method label: the standard methods by name, any other as one value.
fn method_of(method: &Method) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE",
    ];
    KNOWN
        .into_iter()
        .find(|known| *known == method.as_str())
        .unwrap_or("other")
}
