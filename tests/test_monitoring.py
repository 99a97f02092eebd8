"""The Prometheus rules of a sortd cluster (ansible/roles/prometheus/files/
sortd-rules.yml), checked and unit-tested (tests/promtool/) with promtool
from Debian's prometheus package, on a test host (trixie), as the
monitoring node will run them."""

import pytest
from clusters import ROOT
from testlab import HostSpec, Lab

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
