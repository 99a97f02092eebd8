"""No single load balancer: the pair of examples/cluster-lb-pair.json, lb-01
and lb-02, shares the floating address 192.168.56.100 with keepalived (VRRP
with unicast peers), and this machine's 127.0.0.1:8080 (shifted by the
stream's offset: tests/clusters.py) reaches that address, as clients reach
a cloud's floating address; lb-02 runs Debian 12, lb-01 Debian 13. Under
the lab's load loop, the holder dies each way a load balancer dies: its
power cut, its link cut, its nginx stopped. Each time the standby serves
within 3 s, the only requests that fail are those sent before it did, and
the old holder comes back as the standby without taking the address back. Then the fleet changes shape, as an
auto-scaling group's would: a web node added to the file joins after its
health gate, the load balancers changed one at a time; a web node removed
is drained and left out; 0 failed each time, and status.yaml shows the
new shape.

The tests run in order against one pair. Lines starting with "measure:" are
the figures the closing notes quote."""

import json
import re
import socket
import time
from pathlib import Path

import pytest
from clusters import (LB_PORT, ROOT, SORTED, cluster_up, finish, measure, playbook, recap, served, sort_at,
                      start_playbook, under_load)
from testlab.hosts import wait_until

CLUSTER = ROOT / "examples/cluster-lb-pair.json"
ADDRESS = "192.168.56.100"
PAIR = ["lb-01", "lb-02"]
LOAD_URL = f"http://127.0.0.1:{LB_PORT}/"
# How soon the standby must serve, from the instant the holder dies.
TAKEOVER_LIMIT = 3.0
# How long the address must then stay put once the old holder is back:
# twenty of keepalived's adverts (keepalived_advert_interval 0.5 s).
STAYS = 10.0


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("failover")


# A web node booted with the others, but not in the environment until the
# scaling test adds it.
ADDED = {"host_name": "web-03", "groups": ["web"], "port_mappings": [{"guest_port": 22, "host_port": 22005}],
         "network_configs": [{"ip": "192.168.56.13"}]}


def without(cluster: Path, name: str, file: Path) -> Path:
    """The lab's cluster file without one node, as the environment's file is
    before the node joins or after it leaves."""
    shape = json.loads(cluster.read_text())
    shape["nodes"] = [node for node in shape["nodes"] if node["host_name"] != name]
    file.write_text(json.dumps(shape))
    return file


@pytest.fixture(scope="module")
def pair(debs, work):
    """The lab and its cluster file with web-03; deployed without it."""
    # lb-02 on Debian 12: a pair of both suites' keepalived (2.2 and 2.3),
    # as a pair upgraded one node at a time is.
    source = json.loads(CLUSTER.read_text())
    next(node for node in source["nodes"] if node["host_name"] == "lb-02")["box"] = "debian/bookworm64"
    source["nodes"].append(ADDED)
    (work / CLUSTER.name).write_text(json.dumps(source))
    with cluster_up(work / CLUSTER.name, "pair") as (lab, cluster, _):
        output, took = playbook(without(cluster, "web-03", work / "before.json"), debs[0], "-e", "sortd_web_serial=2")
        measure(f"first deployment of the pair and 2 web nodes: {took:.1f} s")
        yield lab, cluster


def holders(lab) -> list[str]:
    """The load balancers that have the floating address on an interface."""
    return [name for name in PAIR if lab.hosts[name].run(
        ["ip", "-o", "-4", "addr", "show", "to", ADDRESS], check=False).stdout.strip()]


def the_holder(lab) -> str:
    found = holders(lab)
    assert len(found) == 1, f"the floating address is on {found or 'no load balancer'}"
    return found[0]


def answers() -> bool:
    """A new connection to the floating address gets /healthz's 200 within
    a quarter of a second."""
    try:
        with socket.create_connection(("127.0.0.1", LB_PORT), timeout=0.25) as connection:
            connection.settimeout(0.25)
            connection.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            return connection.recv(16).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def test_one_load_balancer_holds_the_floating_address_and_serves(pair):
    lab, _ = pair
    assert the_holder(lab) == "lb-01"  # the first of the inventory takes it first
    assert sort_at(LB_PORT) == SORTED
    for name in PAIR:
        assert lab.hosts[name].run(["systemctl", "is-active", "keepalived", "nginx"]).stdout.split() == \
            ["active", "active"]


# Each way the holder dies, and how it comes back. nginx's stop is asked
# for without waiting: it then takes seconds to close its open connections.
FAULTS = {
    "power cut": (lambda lab, name: lab.cut_power(name), lambda lab, name: lab.start_host(name)),
    "link cut": (lambda lab, name: lab.set_link(name, False), lambda lab, name: lab.set_link(name, True)),
    "nginx stopped": (lambda lab, name: lab.hosts[name].run(["systemctl", "stop", "--no-block", "nginx"]),
                      lambda lab, name: lab.hosts[name].run(["systemctl", "start", "nginx"])),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_the_standby_serves_within_3_seconds_and_keeps_the_address(pair, work, fault):
    lab, _ = pair
    cut, mend = FAULTS[fault]
    old = the_holder(lab)
    standby = next(name for name in PAIR if name != old)
    with under_load(LOAD_URL, work, resend_on_close=True) as load:
        time.sleep(2)
        died = time.time()
        cut(lab, old)
        wait_until(answers, 30, f"an answer through the floating address after {fault} on {old}", interval=0.05)
        served = time.time() - died
        assert standby in holders(lab)
        mend(lab, old)
        wait_until(lambda: lab.hosts[old].run(["systemctl", "is-active", "keepalived"], check=False).returncode == 0,
                   60, f"keepalived back on {old}")
        back = time.time()
        while time.time() - back < STAYS:
            assert holders(lab) == [standby], f"{old} came back and the address moved: {holders(lab)}"
            time.sleep(0.5)
    after = [sent - died for sent in load["failed_at"] if sent > died + served]
    measure(f"{fault} on the holder {old}: {standby} served {served:.2f} s later; {load['requests']} requests, "
            f"{load['failed']} failed (sent {[round(sent - died, 2) for sent in load['failed_at']]} s from the fault), "
            f"{load['resent']} sent again on a new connection; {old} back as the standby, address kept {STAYS:.0f} s")
    assert served < TAKEOVER_LIMIT
    # Only a request on its way at the instant may fail: one per thread at most.
    assert load["failed"] <= 4, load["failures"]
    assert not after, (after, load["failures"])
    assert sort_at(LB_PORT) == SORTED


def test_a_web_node_added_joins_after_its_health_gate_over_the_pair_in_turn(pair, debs, work):
    lab, cluster = pair
    holder = the_holder(lab)
    # nginx's reload closes its idle kept-alive connections: a request sent
    # on one as it closes is sent again on a new one, as clients do.
    with under_load(LOAD_URL, work, resend_on_close=True) as load:
        output, took = playbook(cluster, debs[0])
        wait_until(lambda: served(lab, "web-03") > 0, 30, "traffic on web-03")
    counts = recap(output)
    measure(f"web-03 added to the file, its run ({took:.1f} s): {load['requests']} requests, {load['failed']} failed, "
            f"{load['resent']} sent again on a new connection; {served(lab, 'web-03')} answered by web-03")
    # Only the new node set up; the load balancers, in turn, after its health gate (the web play's end).
    assert counts["web-03"]["changed"] > 0 and counts["web-01"]["changed"] == counts["web-02"]["changed"] == 0, counts
    assert all(counts[name]["changed"] > 0 for name in PAIR), counts
    assert output.index("PLAY [Balance over the web nodes]") > output.index("Check that sortd answers")
    assert output.count("PLAY [Balance over the web nodes]") == len(PAIR)  # a play for each, in turn
    assert load["failed"] == 0, load["failures"]
    assert the_holder(lab) == holder


def test_a_web_node_removed_is_drained_then_left_out(pair, debs, work):
    lab, cluster = pair
    smaller = without(cluster, "web-01", work / "after.json")
    with under_load(LOAD_URL, work, resend_on_close=True) as load:
        output, took = playbook(smaller, debs[0])
        left = served(lab, "web-01")
        time.sleep(3)
        later = served(lab, "web-01")
    measure(f"web-01 removed from the file, its run ({took:.1f} s): {load['requests']} requests, "
            f"{load['failed']} failed, {load['resent']} sent again on a new connection")
    assert "web-01" not in recap(output)
    assert later == left  # no request for it after the load balancers left it out
    assert load["failed"] == 0, load["failures"]
    status = finish(start_playbook(smaller, playbook_file="ansible/status.yaml"))
    shown = {line.split(":")[0].strip(' "') for line in status.splitlines() if re.match(r'\s+"[a-z0-9-]+: ', line)}
    assert shown == {"lb-01", "lb-02", "web-02", "web-03"}, status[-3000:]
    assert "All 2 web nodes healthy" in status
    assert f"{the_holder(lab)}: " in status and f"holds the floating address {ADDRESS}" in status, status[-3000:]
    assert "stands by for the floating address" in status
