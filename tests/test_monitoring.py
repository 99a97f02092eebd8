"""Monitoring: the Prometheus rules of a sortd cluster (ansible/roles/
prometheus/files/sortd-rules.yml), checked and unit-tested (tests/promtool/)
with promtool from Debian's prometheus on a test host; and
examples/cluster-monitoring.json (a load balancer, two web nodes and a
monitoring node) deployed on test hosts: every target up, the metrics ports
closed to all but the monitoring node, and the "sortd down" alert firing
when sortd stops on a node."""

import json
import time
import urllib.request

import pytest
from clusters import ROOT, cluster_up, http_status, playbook, recap
from testlab import HostSpec, Lab
from testlab.hosts import wait_until

RULES = "ansible/roles/prometheus/files/sortd-rules.yml"
TESTS = "tests/promtool/sortd-rules.test.yml"


@pytest.fixture(scope="module")
def host():
    with Lab("monitoring") as lab:
        host = lab.boot(HostSpec("mon-01", "10.231.0.51"))
        host.run(["apt-get", "update", "-q"])
        host.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "prometheus"], timeout=900)
        for path in (RULES, TESTS):
            host.put(ROOT / path, f"/root/sortd/{path}")
        yield host


def promtool(host, *args: str):
    return host.run(["promtool", *args], check=False)


def test_promtool_checks_the_rules(host):
    checked = promtool(host, "check", "rules", f"/root/sortd/{RULES}")
    print(checked.stdout.strip())
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 10 rules found" in checked.stdout


def test_each_alert_fires_on_its_fault_and_not_on_near_misses(host):
    version = host.run(["dpkg-query", "-W", "-f", "${Version}", "prometheus"]).stdout
    tested = promtool(host, "test", "rules", f"/root/sortd/{TESTS}")
    print(f"promtool test rules (prometheus {version}): exit {tested.returncode}")
    assert tested.returncode == 0, tested.stdout + tested.stderr


@pytest.mark.parametrize("rule, broken", [
    ("> 0.05", "> 0.5"),                      # a 5xx threshold too lax
    ("for: 30s", "for: 5m"),                  # sortd down noticed too late
    ("and on (instance) up{job=\"node\"} == 1", ""),  # SortdDown also for a node down
    ("[15m]) > 2", "[15m]) > 3"),             # a crash loop not seen
])
def test_the_rule_tests_catch_a_broken_rule(host, rule, broken):
    """The tests can fail: each of these edits of the rules makes them fail."""
    host.run(["sh", "-c", f"sed 's/{sed_escape(rule)}/{sed_escape(broken)}/' /root/sortd/{RULES} "
              f"> /root/sortd/{RULES}.broken && ! cmp -s /root/sortd/{RULES} /root/sortd/{RULES}.broken "
              f"&& cp /root/sortd/{RULES} /root/sortd/{RULES}.good && cp /root/sortd/{RULES}.broken /root/sortd/{RULES}"])
    try:
        # Still valid rules: what fails is what they mean.
        assert promtool(host, "check", "rules", f"/root/sortd/{RULES}").returncode == 0
        tested = promtool(host, "test", "rules", f"/root/sortd/{TESTS}")
    finally:
        host.run(["cp", f"/root/sortd/{RULES}.good", f"/root/sortd/{RULES}"])
    assert tested.returncode != 0, f"promtool test rules passed with {rule!r} -> {broken!r}"


def sed_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("/", "\\/").replace("&", "\\&").replace("[", "\\[")


# Prometheus's page, forwarded as the example cluster file says.
PROMETHEUS = "http://127.0.0.1:9090"
WEB = ("web-01", "web-02")


def prometheus_api(path: str) -> dict:
    with urllib.request.urlopen(PROMETHEUS + path, timeout=10) as answer:
        return json.load(answer)["data"]


@pytest.fixture(scope="module")
def monitored(debs):
    with cluster_up(ROOT / "examples/cluster-monitoring.json", "monitored") as (lab, hosts, booted):
        output, first = playbook(hosts, debs[1])
        assert set(recap(output)) == {"lb-01", *WEB, "mon-01"}, output[-4000:]
        output, second = playbook(hosts, debs[1])
        assert all(counts["changed"] == 0 for counts in recap(output).values()), output[-4000:]
        print(f"monitored cluster: boot {booted:.1f}s, first playbook {first:.1f}s, "
              f"second {second:.1f}s (changed=0)")
        yield lab


def test_prometheus_sees_every_target_up(monitored):
    expected = {("node", node) for node in ("lb-01", *WEB, "mon-01")} | \
        {("sortd", node) for node in WEB} | {("nginx", "lb-01"), ("prometheus", "mon-01")}
    started = time.monotonic()

    def targets():
        return {(t["labels"]["job"], t["labels"]["instance"]): t["health"]
                for t in prometheus_api("/api/v1/targets")["activeTargets"]}
    wait_until(lambda: targets() == {target: "up" for target in expected}, 90,
               "every target up in Prometheus", interval=1)
    print(f"Prometheus: {len(expected)} targets up {time.monotonic() - started:.1f}s after the deployment")
    # The rules are loaded, and each scraped value is there.
    rules = {rule["name"] for group in prometheus_api("/api/v1/rules")["groups"] for rule in group["rules"]}
    assert {"NodeDown", "SortdDown", "SortdErrorRatioHigh", "SortdLatencyHigh", "SortdMemoryNearLimit",
            "SortdRestarting"} <= rules
    limits = prometheus_api("/api/v1/query?query=sortd_memory_limit_bytes")["result"]
    assert sorted((r["metric"]["instance"], r["value"][1]) for r in limits) == \
        [(node, str(2**30)) for node in WEB]
    assert prometheus_api("/api/v1/query?query=nginx_up")["result"][0]["value"][1] == "1"


def reaches(lab, source: str, target: str, port: int, path: str = "/metrics") -> str:
    """What `source` gets from target:port: the HTTP status, or 'refused'."""
    return http_status(lab, source, f"http://{lab.hosts[target].spec.ip}:{port}{path}")


def test_metrics_ports_answer_the_monitoring_node_alone(monitored):
    lab = monitored
    ports = {("web-01", 9100): "200", ("web-01", 9180): "200", ("web-02", 9180): "200",
             ("lb-01", 9100): "200", ("lb-01", 9113): "200"}
    for (target, port), status in ports.items():
        assert reaches(lab, "mon-01", target, port) == status, (target, port)
        # From every other node of the cluster: nothing (the firewall drops it).
        for other in ("lb-01", *WEB):
            if other != target:
                assert reaches(lab, other, target, port) == "refused", (other, target, port)
    # The metrics port serves the metrics, not the API.
    for path in ("/", "/healthz", "/metrics/../", "/METRICS"):
        assert reaches(lab, "mon-01", "web-01", 9180, path) == "404", path
    # The public load balancer still refuses /metrics; nginx's status is on its loopback only.
    assert http_status(lab, "lb-01", "http://127.0.0.1/metrics") == "403"
    assert reaches(lab, "mon-01", "lb-01", 8081, "/stub_status") == "refused"


def test_stopping_sortd_fires_the_sortd_down_alert(monitored):
    lab = monitored
    web = lab.hosts["web-02"]

    def firing() -> set[tuple[str, str]]:
        return {(a["labels"]["alertname"], a["labels"]["instance"]) for a in prometheus_api("/api/v1/alerts")["alerts"]
                if a["state"] == "firing"}
    assert firing() == set()
    # The socket too: with it, the next scrape would start sortd again.
    web.run(["systemctl", "stop", "sortd.socket", "sortd.service"])
    stopped = time.monotonic()
    try:
        wait_until(lambda: ("SortdDown", "web-02") in firing(), 120, "SortdDown for web-02", interval=1)
        took = time.monotonic() - stopped
        assert firing() == {("SortdDown", "web-02")}
    finally:
        web.run(["systemctl", "start", "sortd.socket"])
    print(f"SortdDown fired {took:.1f}s after sortd stopped on web-02 (for: 30s, scrape and evaluation every 15s)")
    # for: 30 s, plus at most one scrape interval to see it down and one
    # evaluation interval to notice.
    assert took <= 30 + 15 + 15 + 5
