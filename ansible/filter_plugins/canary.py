"""Filters for the canary release (role canary): the judgement of one web node
running a new release against the others, from their sortd metrics read
before and after the same window.

    {{ before | sortd_canary_verdict(after, canary, probes_failed, thresholds) }}

`before` and `after` map each web node to the text of its GET /metrics
(Prometheus's text format, parsed with prometheus_client).
"""

from prometheus_client.parser import text_string_to_metric_families


def sort_metrics(text: str) -> dict:
    """The counters of POST / (sorts): requests, 5xx answers, and the latency
    histogram's cumulative buckets ({upper bound: count})."""
    requests = errors = 0.0
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if labels.get("route") != "/":
                continue
            if sample.name == "sortd_http_requests_total" and labels.get("method") == "POST":
                requests += sample.value
                if labels.get("status", "").startswith("5"):
                    errors += sample.value
            elif sample.name == "sortd_http_request_duration_seconds_bucket":
                bound = float(labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return {"requests": requests, "errors": errors, "buckets": buckets}


def _difference(after: dict, before: dict) -> dict:
    return {
        "requests": after["requests"] - before["requests"],
        "errors": after["errors"] - before["errors"],
        "buckets": {bound: count - before["buckets"].get(bound, 0.0) for bound, count in after["buckets"].items()},
    }


def _sum(windows: list[dict]) -> dict:
    total = {"requests": 0.0, "errors": 0.0, "buckets": {}}
    for window in windows:
        total["requests"] += window["requests"]
        total["errors"] += window["errors"]
        for bound, count in window["buckets"].items():
            total["buckets"][bound] = total["buckets"].get(bound, 0.0) + count
    return total


def _quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus's histogram_quantile: linear within the bucket that holds
    the q-th observation."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / max(count - lower_count, 1e-9)
        lower_bound, lower_count = bound, count
    return lower_bound


def _summary(window: dict) -> dict:
    requests = window["requests"]
    return {
        "requests": int(requests),
        "errors": int(window["errors"]),
        "error_ratio": window["errors"] / requests if requests else 0.0,
        "p99_seconds": _quantile(0.99, window["buckets"]),
    }


def sortd_canary_verdict(before: dict, after: dict, canary: str, probes_failed: int, thresholds: dict) -> dict:
    """Whether the canary is no worse than the other web nodes over the
    window, and if not, which metric failed and by how much."""
    windows = {node: _difference(sort_metrics(after[node]), sort_metrics(before[node])) for node in after}
    mine = _summary(windows[canary])
    others = _summary(_sum([window for node, window in windows.items() if node != canary]))
    reasons = []
    compared = mine["requests"] >= thresholds["min_requests"]
    if probes_failed:
        reasons.append(f"correctness probe: {probes_failed} of {thresholds['probes']} known bodies answered wrong")
    if compared:
        excess = mine["error_ratio"] - others["error_ratio"]
        if excess > thresholds["max_error_ratio_increase"]:
            reasons.append(f"5xx ratio: {mine['error_ratio']:.2%} on the canary against {others['error_ratio']:.2%} "
                           f"on the others (+{excess:.2%}, limit +{thresholds['max_error_ratio_increase']:.2%})")
        if mine["p99_seconds"] is not None and others["p99_seconds"]:
            ratio = mine["p99_seconds"] / others["p99_seconds"]
            if ratio > thresholds["max_p99_ratio"]:
                reasons.append(f"p99 latency: {mine['p99_seconds'] * 1000:.2f} ms on the canary against "
                               f"{others['p99_seconds'] * 1000:.2f} ms on the others ({ratio:.1f}x, "
                               f"limit {thresholds['max_p99_ratio']}x)")
    # Too few sorts on the canary to compare metrics: the probe decides alone.
    return {"passed": not reasons, "reasons": reasons, "metrics_compared": compared, "canary": mine,
            "others": others}


class FilterModule:
    def filters(self):
        return {"sortd_canary_verdict": sortd_canary_verdict}
