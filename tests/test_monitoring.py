"""Monitoring: the Prometheus rules of a sortd cluster (ansible/roles/
prometheus/files/sortd-rules.yaml), checked and unit-tested (tests/promtool/)
with promtool from Debian's prometheus on a test host; and
examples/cluster-monitoring.json (a load balancer, two web nodes and a
monitoring node) deployed on test hosts: every target up, the metrics ports
closed to all but the monitoring node, and the "sortd down" alert firing
when sortd stops on a node."""

import json
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from clusters import (LB_PORT, RECEIVER_PORT, ROOT, basic_auth, broken_release, build_patched_deb, cluster_up,
                      firing_alerts, history, http_status, notices, playbook, prometheus_api, prometheus_status, recap,
                      said, start_receiver, under_load, version_of)
from testlab import HostSpec, Lab
from testlab.load import EXPECTED
from testlab.hosts import wait_until

RULES = "ansible/roles/prometheus/files/sortd-rules.yaml"
TESTS = "tests/promtool/sortd-rules.test.yaml"


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
    assert "SUCCESS: 14 rules found" in checked.stdout


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
    (" unless on (instance) probe_failed_due_to_regex{job=\"entry\"} == 1", ""),  # a wrong answer also "down"
    ("< 14 * 86400", "< 7 * 86400"),          # a certificate's expiry seen a week late
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
    for special in "\\/&[.*^$":
        text = text.replace(special, "\\" + special)
    return text


WEB = ("web-01", "web-02")
# Prometheus's page (clusters.PROMETHEUS, forwarded as the example cluster
# file says): its password is a secret of the environment (a vault-encrypted
# value in the cluster file's secrets), made for this run: a leak is no
# coincidence.
PROMETHEUS_PASSWORD = f"prometheus-{secrets.token_hex(12)}"


def api(path: str) -> dict:
    return prometheus_api(path, PROMETHEUS_PASSWORD)


# Alertmanager's notices go to a webhook receiver on the monitoring node
# (clusters.start_receiver); the webhook's URL is a secret of the
# environment, as a chat's or a pager's would be.
WEBHOOK = f"http://127.0.0.1:{RECEIVER_PORT}/alerts-{secrets.token_hex(8)}"
# Quick notices for the test (the defaults wait 30 s, then 5 min between two).
ALERTMANAGER = {"alertmanager_group_wait": "5s", "alertmanager_group_interval": "15s"}


# When sortd came back on web-02 after SortdDown, by the machine's clock:
# its resolved notice is checked later (test_sortd_down_s_resolved_notice_
# reached_the_webhook), once the canary has run, instead of waited for.
SORTD_BACK: dict[str, float] = {}


@pytest.fixture(scope="module")
def monitored(debs, tmp_path_factory):
    """The example deployed with the older release (the canaries bring newer
    ones), with its secrets file."""
    work = tmp_path_factory.mktemp("monitored")
    vault_password = work / "vault-password"
    vault_password.write_text(secrets.token_hex(16))
    encrypted = "".join(subprocess.run(
        ["ansible-vault", "encrypt_string", "--vault-password-file", str(vault_password), "--stdin-name", name],
        input=value, capture_output=True, text=True, check=True).stdout
        for name, value in (("prometheus_web_password", PROMETHEUS_PASSWORD), ("alertmanager_webhook_url", WEBHOOK)))
    (work / "secrets.yaml").write_text(encrypted)
    environment = work / "cluster-monitoring.json"
    example = json.loads((ROOT / "examples/cluster-monitoring.json").read_text())
    # The load balancer on Debian 12: its nginx exporter (0.11) exits when
    # nginx's status does not answer at its start, where Debian 13's waits.
    next(node for node in example["nodes"] if node["host_name"] == "lb-01")["box"] = "debian/bookworm64"
    environment.write_text(json.dumps(dict(example, secrets="secrets.yaml", settings={"monitoring": ALERTMANAGER})))
    with cluster_up(environment, "monitored") as (lab, hosts, booted):
        start_receiver(lab.hosts["mon-01"])
        options = ["--vault-password-file", str(vault_password), "-e",
                   json.dumps({"lb_unlimited_clients": [lab.gateway]})]
        output, first = playbook(hosts, debs[0], *options)
        assert set(recap(output)) == {"lb-01", *WEB, "mon-01"}, output[-4000:]
        # (That a second run changes nothing here: the good canary's run.)
        print(f"monitored cluster: boot {booted:.1f}s, first playbook {first:.1f}s")
        # The secret stays secret: not in the run's output, nor in any
        # node's journal, where each module logs "Invoked with" its arguments.
        assert PROMETHEUS_PASSWORD not in output and WEBHOOK not in output
        for name, node in lab.hosts.items():
            journal = node.run(["journalctl", "--no-pager", "-q", "-o", "cat"]).stdout
            assert "Invoked with" in journal and PROMETHEUS_PASSWORD not in journal and WEBHOOK not in journal, name
        yield lab, hosts, options


def test_prometheus_sees_every_target_up(monitored):
    # The public entry, probed through the blackbox exporter: here the load
    # balancer's plain HTTP (no domain).
    entry = f"http://{monitored[0].hosts['lb-01'].spec.ip}/"
    expected = {("node", node) for node in ("lb-01", *WEB, "mon-01")} | \
        {("sortd", node) for node in WEB} | {("nginx", "lb-01"), ("prometheus", "mon-01"), ("entry", entry)}
    started = time.monotonic()

    def targets():
        return {(t["labels"]["job"], t["labels"]["instance"]): t["health"]
                for t in api("/api/v1/targets")["activeTargets"]}
    wait_until(lambda: targets() == {target: "up" for target in expected}, 90,
               "every target up in Prometheus", interval=1)
    # Its own scrape included, which gives the password; without it, or
    # with another, Prometheus asks for it.
    for authorization in ({}, basic_auth("sortd", "guess")):
        assert prometheus_status(authorization) == 401
    print(f"Prometheus: {len(expected)} targets up {time.monotonic() - started:.1f}s after the deployment")
    # The rules are loaded, and each scraped value is there.
    rules = {rule["name"] for group in api("/api/v1/rules")["groups"] for rule in group["rules"]}
    assert {"NodeDown", "SortdDown", "SortdErrorRatioHigh", "SortdLatencyHigh", "SortdMemoryNearLimit",
            "SortdRestarting"} <= rules
    limits = api("/api/v1/query?query=sortd_memory_limit_bytes")["result"]
    assert sorted((r["metric"]["instance"], r["value"][1]) for r in limits) == \
        [(node, str(2**30)) for node in WEB]
    assert api("/api/v1/query?query=nginx_up")["result"][0]["value"][1] == "1"
    wait_until(lambda: api("/api/v1/query?query=probe_success")["result"], 30, "the entry's first probe", interval=1)
    probe = api("/api/v1/query?query=probe_success")["result"][0]
    assert (probe["metric"]["instance"], probe["value"][1]) == (entry, "1"), probe


def reaches(lab, source: str, target: str, port: int, path: str = "/metrics") -> str:
    """What `source` gets from target:port: the HTTP status, or 'refused'."""
    return http_status(lab, source, f"http://{lab.hosts[target].spec.ip}:{port}{path}")


def test_metrics_ports_answer_the_monitoring_node_alone(monitored):
    lab, _, _ = monitored
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
    # Alertmanager's page, and its cluster port, are the monitoring node's own.
    for port in (9093, 9094, 9115):
        assert reaches(lab, "lb-01", "mon-01", port, "/-/ready") == "refused", port
    assert http_status(lab, "mon-01", "http://127.0.0.1:9093/-/ready") == "200"
    # The public load balancer still refuses /metrics; nginx's status is on its loopback only.
    assert http_status(lab, "lb-01", "http://127.0.0.1/metrics") == "403"
    assert reaches(lab, "mon-01", "lb-01", 8081, "/stub_status") == "refused"


def test_stopping_sortd_fires_sortd_down_and_its_notice_reaches_the_webhook(monitored):
    lab, _, _ = monitored
    web, monitoring = lab.hosts["web-02"], lab.hosts["mon-01"]
    # A fresh monitoring node raised no alert, and sent no notice.
    assert firing_alerts(PROMETHEUS_PASSWORD) == set()
    assert notices(monitoring) == []
    # Meanwhile sortd flaps on web-01 as a crash loop does: restarted four
    # times, once per scrape interval. One notice says so (SortdRestarting),
    # not one for each time it went away and came back.
    lab.hosts["web-01"].run(["systemd-run", "--unit", "sortd-test-flap", "sh", "-c",
                             "for i in 1 2 3 4; do systemctl restart sortd.service; sleep 16; done"])
    # The socket too: with it, the next scrape would start sortd again.
    web.run(["systemctl", "stop", "sortd.socket", "sortd.service"])
    stopped = time.monotonic()
    try:
        wait_until(lambda: ("SortdDown", "web-02") in firing_alerts(PROMETHEUS_PASSWORD), 120, "SortdDown for web-02",
                   interval=1)
        took = time.monotonic() - stopped
        wait_until(lambda: ("firing", "SortdDown", "web-02") in said(notices(monitoring)), 60,
                   "SortdDown's notice at the webhook", interval=1)
        noticed = time.monotonic() - stopped
        wait_until(lambda: ("firing", "SortdRestarting", "web-01") in said(notices(monitoring)), 90,
                   "SortdRestarting's notice at the webhook", interval=1)
        flapped = time.monotonic() - stopped
        wait_until(lambda: lab.hosts["web-01"].run(["systemctl", "is-active", "sortd-test-flap"],
                                                    check=False).stdout.strip() != "active", 60, "the flapping's end")
        assert firing_alerts(PROMETHEUS_PASSWORD) == {("SortdDown", "web-02"), ("SortdRestarting", "web-01")}
        assert sorted(said(notices(monitoring))) == \
            [("firing", "SortdDown", "web-02"), ("firing", "SortdRestarting", "web-01")], notices(monitoring)
    finally:
        web.run(["systemctl", "start", "sortd.socket"])
        SORTD_BACK["web-02"] = time.time()
    print(f"SortdDown fired {took:.1f}s after sortd stopped on web-02 (for: 30s, scrape and evaluation every 15s); "
          f"its notice reached the webhook {noticed:.1f}s after the stop; sortd restarted 4 times on web-01 in 48 s: "
          f"one notice, SortdRestarting, {flapped:.1f}s after the flapping began")
    # for: 30 s, plus at most one scrape interval to see it down and one
    # evaluation interval to notice; then Prometheus sends it at once, and
    # Alertmanager within its group_wait.
    assert took <= 30 + 15 + 15 + 5
    assert noticed <= took + 5 + 10


# Releases that pass /healthz but are worse, built from a patched copy of the
# source: one answers every sort wrong (a 0 more), one 5 times slower (it
# spins: a timer's millisecond would make a 7 µs sort 100 times slower).
WRONG = {"src/sort.rs": ("        out.push(b']');\n    }\n}\n",
                         "        out.extend_from_slice(b\",0]\");\n    }\n}\n")}
SLOW = {"src/handlers.rs": ("pub async fn sort<S, B>(",
                            "pub async fn sort<S, B>(state: Arc<State>, query: Option<String>, content_length: Option<u64>,\n"
                            "    body: S) -> Answer\nwhere\n"
                            "    S: Stream<Item = Result<B, warp::Error>> + Unpin + Send + 'static,\n    B: Buf + Send,\n{\n"
                            "    let begun = Instant::now();\n"
                            "    let answer = sort_at_full_speed(state, query, content_length, body).await;\n"
                            "    let five_times = begun.elapsed() * 5;\n"
                            "    while begun.elapsed() < five_times {\n        std::hint::spin_loop();\n    }\n"
                            "    answer\n}\n\nasync fn sort_at_full_speed<S, B>(")}
WINDOW = 20
# How a client sees the LB's old worker close its kept-alive connection.
RELOAD_RACES = {"RemoteDisconnected", "ConnectionResetError", "BrokenPipeError"}
# What the load loop gets from the WRONG release: its list and a 0.
WRONG_ANSWER = "200 " + repr(EXPECTED[:-2] + b",0]}")


def assert_only_the_canary_failed(load: dict, its_answers: set[str] = frozenset()) -> None:
    """Nothing failed beyond the canary's share: every failed request got one
    of the canary's own answers, or met an nginx reload of the LB closing a
    kept-alive connection as the client sent on it: at most once per client
    connection (the load loop's 4) and reload (2: for the canary's share,
    for even shares)."""
    kinds = load["failure_kinds"]
    assert sum(n for kind, n in kinds.items() if kind in RELOAD_RACES) <= 4 * 2, kinds
    assert set(kinds) <= RELOAD_RACES | its_answers, kinds


def changed_tasks(output: str) -> list[str]:
    """The tasks and handlers that changed a node, by the names
    ansible-playbook prints ("role : task")."""
    return [block.split("]", 1)[0] for block in re.split(r"\n(?:TASK|RUNNING HANDLER) \[", output)[1:]
            if "\nchanged: [" in block]


def versions(lab) -> dict[str, str]:
    return {node: lab.hosts[node].run(["dpkg-query", "-W", "-f", "${Version}", "sortd"]).stdout for node in WEB}


def canary(monitored, deb: Path, work: Path, *args: str) -> tuple[str, dict, float]:
    """A canary deployment of `deb` under load through the LB."""
    lab, hosts, options = monitored
    with under_load(f"http://127.0.0.1:{LB_PORT}/", work) as load:
        output, took = playbook(hosts, deb, "-e", "sortd_canary=true", "-e", f"canary_window={WINDOW}",
                                *options, *args, check=False)
    return output, load, took


def test_a_good_canary_proceeds(monitored, debs, tmp_path):
    lab, _, _ = monitored
    old, new = (version_of(deb) for deb in debs)
    assert versions(lab) == {node: old for node in WEB}
    output, load, took = canary(monitored, debs[1], tmp_path)
    verdict = history(lab, "web-01")[-1]
    print(f"good canary {new}: {took:.1f}s ({WINDOW}s window); {load['requests']} requests, {load['failed']} failed; "
          f"canary {verdict.get('canary')}, others {verdict.get('others')}; failures {load['failure_kinds']}")
    assert "PLAY RECAP" in output and all(c["failed"] == 0 for c in recap(output).values()), output[-6000:]
    # This second run of the cluster changes only the release and the
    # shares: the monitoring node (Prometheus, its password's hash, its
    # exporter) changes nothing, and neither does what any node serves it.
    assert recap(output)["mon-01"]["changed"] == 0, output[-6000:]
    served_to_monitoring = [task for task in changed_tasks(output)
                            if any(word in task for word in ("exporter", "metrics", "nginx's status"))]
    assert served_to_monitoring == [], served_to_monitoring
    assert PROMETHEUS_PASSWORD not in output
    assert verdict["action"] == "canary" and verdict["result"] == "passed" and verdict["to"] == new, verdict
    assert verdict["canary"]["requests"] >= 50
    assert versions(lab) == {node: new for node in WEB}
    assert_only_the_canary_failed(load)
    # Even shares again.
    assert shares_even(lab)


def test_sortd_down_s_resolved_notice_reached_the_webhook(monitored):
    """sortd back on web-02: the next scrape and evaluation resolve
    SortdDown, and the group's next notice (group_interval after the first)
    says so, once."""
    lab, _, _ = monitored
    if "web-02" not in SORTD_BACK:
        pytest.skip("SortdDown's test did not run")
    down = [notice for notice in notices(lab.hosts["mon-01"]) if notice[1:3] == ("SortdDown", "web-02")]
    assert said(down) == [("firing", "SortdDown", "web-02"), ("resolved", "SortdDown", "web-02")], down
    # The flapping node's notice was not sent again in the minutes since (the
    # good canary's restart of it included).
    flapped = [notice for notice in notices(lab.hosts["mon-01"]) if notice[1:3] == ("SortdRestarting", "web-01")]
    assert said(flapped) == [("firing", "SortdRestarting", "web-01")], flapped
    resolved = down[1][3] - SORTD_BACK["web-02"]
    print(f"SortdDown's resolved notice reached the webhook {resolved:.1f}s after sortd was started again on web-02")
    assert resolved <= 15 + 15 + 15 + 10


def test_a_wrong_and_slow_canary_is_rolled_back_on_its_own(monitored, debs, tmp_path):
    # One release built from a patched copy of the source that answers wrong
    # (a 0 added to every list) and 5 times slower: the verdict must name
    # both the correctness probe and the p99 latency, each check on its own.
    lab, _, _ = monitored
    good = version_of(debs[1])
    bad = build_patched_deb(tmp_path, good.split("-")[-1] + "+wrong+slow", {**WRONG, **SLOW})
    assert versions(lab) == {node: good for node in WEB}
    output, load, took = canary(monitored, bad, tmp_path)
    entries = history(lab, "web-01")
    judged = next(e for e in reversed(entries) if e["action"] == "canary")
    message = next((line.strip() for line in output.splitlines() if f"Canary web-01 failed with {version_of(bad)}" in line), "")
    print(f"wrong and slow canary {version_of(bad)}: stopped in {took:.1f}s ({WINDOW}s window); {load['requests']} "
          f"requests, {load['failed']} failed ({load['failure_kinds']}); {message[:400]}")
    assert recap(output)["lb-01"]["failed"] == 1, output[-6000:]
    assert "correctness probe" in message and "p99 latency" in message, output[-6000:]
    assert judged["result"] == "failed, rolled back" and judged["to"] == version_of(bad), judged
    print("web-01's history:", *entries[-3:], sep="\n  ")
    assert {"action": "rollback", "from": version_of(bad), "to": good, "result": "ok"}.items() <= entries[-1].items()
    assert_back_to(lab, good, bad)
    # Only the canary's own answers failed, and fewer than its share of the
    # requests (1 in 5 with two web nodes): only while it ran the bad release.
    assert_only_the_canary_failed(load, {WRONG_ANSWER})
    assert load["failed"] <= 0.2 * load["requests"], load


def shares_even(lab) -> bool:
    """No web node has a canary's weight in the LB's site."""
    return "weight=" not in lab.hosts["lb-01"].run(["cat", "/etc/nginx/sites-available/sortd-lb"]).stdout


def assert_back_to(lab, good: str, bad: Path) -> None:
    """The canary is back on `good`, the other node never ran `bad`, and the
    load balancer's shares are even again."""
    assert versions(lab) == {node: good for node in WEB}
    assert all(e["to"] != version_of(bad) for e in history(lab, "web-02"))
    assert shares_even(lab)


def test_a_canary_that_does_not_come_up_is_rolled_back_and_the_shares_evened(monitored, debs, tmp_path):
    """The health gate stops it before any judgement: the run still evens the
    shares and records the decision."""
    lab, _, _ = monitored
    good = version_of(debs[1])
    bad = broken_release(debs[1], tmp_path)
    assert versions(lab) == {node: good for node in WEB}
    output, load, took = canary(monitored, bad, tmp_path, "-e", "web_health_retries=5", "-e", "web_health_delay=1")
    entries = history(lab, "web-01")
    message = next((line.strip() for line in output.splitlines() if f"Canary web-01 failed with {version_of(bad)}" in line), "")
    print(f"canary that does not start {version_of(bad)}: stopped in {took:.1f}s; {load['requests']} requests, "
          f"{load['failed']} failed ({load['failure_kinds']}); {message[:400]}")
    print("web-01's history:", *entries[-2:], sep="\n  ")
    assert recap(output)["lb-01"]["failed"] == 1, output[-6000:]
    assert "it did not come up" in message and f"Rolled back to {good}" in message, output[-6000:]
    assert {"action": "deploy", "to": version_of(bad), "result": "failed, rolled back"}.items() <= entries[-2].items()
    assert {"action": "canary", "to": version_of(bad), "result": "failed, rolled back"}.items() <= entries[-1].items()
    assert_back_to(lab, good, bad)
    # The load balancer passes the canary's share on to the other node.
    assert_only_the_canary_failed(load)


def sortd_buckets() -> list[float]:
    """The upper bounds of sortd's latency histogram, as src/metrics.rs's
    exponential_buckets(start, factor, count) makes them, then +Inf."""
    start, factor, count = re.search(r"exponential_buckets\(([\d.]+), ([\d.]+), (\d+)\)",
                                     (ROOT / "src" / "metrics.rs").read_text()).groups()
    return [float(start) * float(factor)**i for i in range(int(count))] + [float("inf")]


BUCKETS = sortd_buckets()


def metrics_text(ok: int, errors: int, latencies: dict[float, int]) -> str:
    """sortd's /metrics with `ok` 200s, `errors` 503s, and the histogram of
    `latencies` ({seconds: count}) in sortd's buckets."""
    lines = [f'sortd_http_requests_total{{route="/",method="POST",status="200"}} {ok}',
             f'sortd_http_requests_total{{route="/",method="POST",status="503"}} {errors}',
             f'sortd_http_requests_total{{route="/healthz",method="GET",status="503"}} {errors * 100}']
    for bound in BUCKETS:
        count = sum(n for seconds, n in latencies.items() if seconds <= bound)
        le = "+Inf" if bound == float("inf") else repr(bound)
        lines.append(f'sortd_http_request_duration_seconds_bucket{{le="{le}",route="/"}} {count}')
    return "# TYPE sortd_http_requests counter\n# TYPE sortd_http_request_duration_seconds histogram\n" + \
        "\n".join(lines) + "\n# EOF\n"


@pytest.mark.quick
@pytest.mark.parametrize("patches", [WRONG, SLOW], ids=["wrong", "slow"])
def test_the_worse_releases_patches_find_their_text_in_this_tree(patches):
    """The slow canary test builds these releases only after its cluster is
    up: a patch whose text the source no longer has is caught here first."""
    for name, (old, _) in patches.items():
        assert (ROOT / name).read_text().count(old) == 1, name


THRESHOLDS = {"probes": 12, "min_requests": 50, "max_error_ratio_increase": 0.01, "max_p99_ratio": 3.0}


@pytest.mark.quick
@pytest.mark.parametrize("canary_after, probes_failed, failed_on, compared", [
    (metrics_text(1000, 0, {0.0003: 1000}), 0, None, True),               # like the others
    (metrics_text(1000, 5, {0.0003: 1005}), 0, None, True),               # +0.5% 5xx: within the limit
    (metrics_text(900, 100, {0.0003: 1000}), 0, "5xx ratio", True),       # +10% 5xx
    (metrics_text(1000, 0, {0.0015: 1000}), 0, "p99 latency", True),      # 5x slower
    (metrics_text(1000, 0, {0.0003: 1000}), 2, "correctness probe", True),
    (metrics_text(10, 10, {0.05: 20}), 0, None, False),                   # too few sorts to compare metrics
    (metrics_text(10, 10, {0.05: 20}), 1, "correctness probe", False),    # ...the probe still counts
])
def test_the_canary_verdict_compares_the_canary_with_the_others(canary_after, probes_failed, failed_on, compared):
    """ansible/filter_plugins/canary.py on the metrics of a window, before any host."""
    import sys
    sys.path.insert(0, str(ROOT / "ansible" / "filter_plugins"))
    from canary import sortd_canary_verdict
    empty = metrics_text(0, 0, {})
    before = {"web-01": empty, "web-02": empty, "web-03": empty}
    after = {"web-01": canary_after, "web-02": metrics_text(2000, 1, {0.0003: 1990, 0.0009: 11}),
             "web-03": metrics_text(2000, 0, {0.0003: 2000})}
    verdict = sortd_canary_verdict(before, after, "web-01", probes_failed, THRESHOLDS)
    print(verdict["reasons"] or verdict["canary"])
    assert verdict["passed"] == (failed_on is None), verdict
    if failed_on:
        assert any(reason.startswith(failed_on) for reason in verdict["reasons"]), verdict
    assert verdict["others"]["requests"] == 4001
    assert verdict["metrics_compared"] is compared, verdict


# The entry's probe as role blackbox_exporter renders it for the load
# balancers' settings (its module, and the URL it names to Prometheus),
# without a host: the ACME path and plain HTTP are probed on test hosts
# (tests/test_acme.py, the monitored cluster above), a test CA's here only.
RENDER = """
- hosts: mon-01
  gather_facts: false
  tasks:
    - ansible.builtin.include_vars: {ROLE}/defaults/main.yaml
    - ansible.builtin.include_vars: {ROLE}/vars/main.yaml
    - ansible.builtin.template: {{src: {ROLE}/templates/blackbox.yaml.j2, dest: {OUT}/blackbox.yml, mode: "0644"}}
    - ansible.builtin.template: {{src: {ROLE}/templates/sortd-entry.yaml.j2, dest: {OUT}/entry.yml, mode: "0644"}}
"""


@pytest.mark.quick
@pytest.mark.parametrize("settings, url, tls_config", [
    ({}, "http://10.0.0.10/", None),
    ({"lb_tls": True}, "https://10.0.0.10/", {"insecure_skip_verify": True}),
    ({"keepalived_address": "10.0.0.100"}, "http://10.0.0.100/", None),
    ({"lb_tls": True, "keepalived_address": "10.0.0.100"}, "https://10.0.0.100/", {"insecure_skip_verify": True}),
    ({"lb_tls": True, "lb_domain": "sortd.example", "lb_email": "ops@sortd.example"}, "https://sortd.example/", None),
    ({"lb_tls": True, "lb_domain": "sortd.example", "lb_email": "ops@sortd.example",
      "blackbox_exporter_ca_bundle": "/etc/ssl/acme-root.pem"},
     "https://sortd.example/", {"ca_file": "/etc/prometheus/blackbox-ca.pem"}),
])
def test_the_entry_probe_follows_the_load_balancers_tls(tmp_path, settings, url, tls_config):
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    (tmp_path / "inventory.yaml").write_text(json.dumps({"all": {"children": {
        "lb": {"hosts": {"lb-01": dict(local, sortd_private_ip="10.0.0.10")}},
        "monitoring": {"hosts": {"mon-01": local}}, "web": {"hosts": {}}}}}))
    (tmp_path / "group_vars").symlink_to(ROOT / "ansible/group_vars")
    (tmp_path / "render.yaml").write_text(RENDER.format(ROLE=ROOT / "ansible/roles/blackbox_exporter", OUT=tmp_path))
    rendered = subprocess.run(["ansible-playbook", "-i", str(tmp_path / "inventory.yaml"), str(tmp_path / "render.yaml"),
                               "-e", json.dumps(settings)], capture_output=True, text=True, cwd=ROOT)
    assert rendered.returncode == 0, rendered.stdout[-3000:]
    module = yaml.safe_load((tmp_path / "blackbox.yml").read_text())["modules"]["sortd_sort"]["http"]
    assert yaml.safe_load((tmp_path / "entry.yml").read_text()) == [{"targets": [url], "labels": {"instance": url}}]
    assert module.get("tls_config") == tls_config
    assert module["fail_if_not_ssl"] == url.startswith("https://")
    # The first known sort, and a pattern its answer alone matches.
    known = yaml.safe_load((ROOT / "ansible/group_vars/all.yaml").read_text())["sortd_known_sorts"][0]
    [answer] = module["fail_if_body_not_matches_regexp"]
    assert module["body"] == known["body"]
    assert re.search(answer, known["answer"]) and not re.search(answer, known["answer"].replace("]", ",0]"))
    assert not re.search(answer, known["answer"] + "\n" + known["answer"])
