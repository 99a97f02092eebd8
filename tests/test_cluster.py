"""The scaled-out cluster of examples/cluster-3-nodes.json: a load balancer
(lb-01, owning 127.0.0.1:8080 and :8443, shifted by the stream's port offset:
tests/clusters.py) in front of three web nodes, as the
original service's ELB in front of an auto-scaling group. The web nodes are
on a private network, as in production: this machine has no route to them,
and Ansible reaches them through lb-01 as a bastion (ssh.jump), which alone
may reach their SSH (the environment's settings). Under a bounded load loop
(testlab's load loop on 127.0.0.1:8080): losing sortd on a node, losing a whole
node, a rolling upgrade, and a bad release rolled back, each with 0 failed
requests; the firewall; TLS.

The tests run in order against one cluster. Lines starting with "measure:"
are the figures bench/cluster prints.
"""

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from clusters import (LB_PORT, LOCK, METRICS_SPELLINGS, ROOT, SORT_BODY, SORTED, STATE_DIR, cluster_up, finish, forwarded,
                      history, http_status, lock_held, measure, metrics_leaks, playbook, recap, run_from, served, sort_at,
                      stale_release, start_playbook, under_load, version_of)
from test_page import check_page_sorts
from testlab.hosts import wait_until

CLUSTER = ROOT / "examples/cluster-3-nodes.json"
WEB = ["web-01", "web-02", "web-03"]
BASTION = "lb-01"
HTTPS_PORT = forwarded(8443)
LOAD_URL = f"http://127.0.0.1:{LB_PORT}/"


# For the runs whose subject is not the rollout (the first deployment, a
# failing load balancer, the way back to a state the next test needs): every
# web node in one batch (the rolling runs are the tests of the rollout).
AT_ONCE = ("-e", f"sortd_web_serial={len(WEB)}")


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cluster")


@pytest.fixture(scope="module")
def cluster(debs, work):
    # The example's nodes, with an environment's settings in the file, as
    # every run here takes them (no -e): web nodes take SSH from the bastion
    # alone; the lab's bridge is exempt from the load balancer's per-client
    # limits, as every load loop here comes from that one address (the
    # 127.0.0.1:8080 forward), far above one client's rate (the limits are
    # tested from other hosts: test_one_client_cannot_take_the_cluster).
    example = json.loads(CLUSTER.read_text())
    bastion_ip = next(node["network_configs"][0]["ip"] for node in example["nodes"] if node["host_name"] == BASTION)
    bridge = bastion_ip.rsplit(".", 1)[0] + ".1"
    environment = work / "environment.json"
    environment.write_text(json.dumps(dict(example, settings={
        "all": {"host_baseline": True},
        "web": {"firewall_ssh_cidrs": [f"{bastion_ip}/32"]},
        "lb": {"lb_unlimited_clients": [bridge]}})))
    with cluster_up(environment, "lb", bastion=BASTION) as (lab, hosts, booted):
        assert lab.gateway == bridge
        # A first deployment has nothing to roll: the web nodes at once.
        output, first = deploy((lab, hosts), debs[0], *AT_ONCE)
        measure(f"4-node cluster (1 lb, 3 web): boot {booted:.1f}s, first deployment (web nodes at once) {first:.1f}s")
        yield lab, hosts


def deploy(cluster, deb: Path, *args: str, check: bool = True) -> tuple[str, float]:
    """The playbook as a user runs it, with the settings from the file."""
    _, hosts = cluster
    return playbook(hosts, deb, *args, check=check)


def ssh_answers(lab, source: str | None, address: str) -> bool:
    """sshd's banner within 3 s, from a lab host or (None) the lab's bridge."""
    command = ["timeout", "3", "bash", "-c", f"exec 3<>/dev/tcp/{address}/22; head -c 4 <&3"]
    return run_from(lab, source, command).stdout == "SSH-"


def version_on(lab, node: str) -> str:
    answer = lab.hosts[node].run(["curl", "-s", "-D", "-", "-o", "/dev/null", "http://127.0.0.1/healthz"]).stdout
    return next(line.split(":", 1)[1].strip() for line in answer.splitlines()
                if line.lower().startswith("x-sortd-version:"))


def test_the_cluster_converges_and_serves_through_the_lb(cluster, debs, work):
    lab, hosts = cluster
    assert sort_at(LB_PORT) == SORTED
    # The web page, through the LB, in a real browser.
    check_page_sorts(LOAD_URL, work / "chromium")
    # (That a second run changes nothing, every role with a production
    # host's baseline: tests/test_acme.py.)
    # The web node logs the client's address, not the load balancer's: here
    # the client is the lab's side of the 127.0.0.1:8080 forward (the bridge).
    request = urllib.request.Request(LOAD_URL, data=SORT_BODY)
    with urllib.request.urlopen(request, timeout=10) as answer:
        request_id = answer.headers["X-Request-ID"]
    time.sleep(1)
    logged = [line for node in WEB for line in lab.hosts[node].run(
        ["journalctl", "-u", "sortd.service", "--no-pager", "-o", "cat"]).stdout.splitlines()
        if f"request_id={request_id}" in line]
    assert len(logged) == 1 and f"real_ip={lab.gateway} " in logged[0], logged
    # Every web node takes part.
    before = {node: served(lab, node) for node in WEB}
    for _ in range(30):
        sort_at(LB_PORT)
    assert all(served(lab, node) > before[node] for node in WEB)


def test_the_lb_refuses_metrics_under_any_spelling(cluster):
    assert metrics_leaks(LB_PORT) == [], f"of {METRICS_SPELLINGS}"


# Run inside a test host, as a separate client of the load balancer: a burst
# of sort requests on one keep-alive connection, or connections that each
# hold a request in flight (headers sent, body not finished) while one more
# request is tried. Prints a JSON summary.
CLIENT = r"""
import http.client, json, socket, sys, time
from collections import Counter
lb, mode, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
body = b'{"x1":"[5,3,9]","x2":"4"}'
def ask(connection):
    connection.request("POST", "/", body)
    answer = connection.getresponse()
    return answer.status, dict(answer.getheaders()), answer.read().decode()
statuses, refused = Counter(), None
if mode == "burst":
    connection = http.client.HTTPConnection(lb, 80, timeout=10)
    started = time.monotonic()
    for _ in range(count):
        status, headers, text = ask(connection)
        statuses[status] += 1
        if status == 429 and refused is None:
            refused = {"headers": headers, "body": text}
    seconds = time.monotonic() - started
    # Then one request a fifth of a second: well inside the rate.
    time.sleep(3)
    later = Counter()
    for _ in range(5):
        later[ask(connection)[0]] += 1
        time.sleep(0.2)
    print(json.dumps({"statuses": statuses, "seconds": seconds, "refused": refused, "later": later}))
else:
    held = []
    for _ in range(count):
        s = socket.create_connection((lb, 80), timeout=10)
        s.sendall(b"POST / HTTP/1.1\r\nHost: lb\r\nContent-Length: 100\r\n\r\n[1")
        held.append(s)
    time.sleep(1)
    status, headers, text = ask(http.client.HTTPConnection(lb, 80, timeout=10))
    for s in held:
        s.close()
    print(json.dumps({"status": status, "body": text}))
"""


def test_one_client_cannot_take_the_cluster(cluster):
    # web-02 and web-03 stand in for two clients on the network (their
    # addresses are what the load balancer sees); lb-01's port 80 is public.
    lab, _ = cluster
    lb = lab.hosts["lb-01"].ip

    def client(node: str, mode: str, count: int) -> dict:
        return json.loads(lab.hosts[node].run(["python3", "-c", CLIENT, lb, mode, str(count)], timeout=120).stdout)

    burst = client("web-02", "burst", 1000)
    neighbour = client("web-03", "burst", 50)
    held = client("web-02", "connections", 70)
    measure(f"per-client limits at the LB (100 r/s, burst 200, 64 in flight): 1000 requests from one client "
            f"in {burst['seconds']:.2f}s: {burst['statuses']}, then "
            f"{burst['later']} at 5/s; another client meanwhile: {neighbour['statuses']}; "
            f"with 70 requests in flight, its next one: {held['status']}")
    # The burst allowance passes, then about the rate: no more.
    allowed = burst["statuses"].get("200", 0)
    assert 200 <= allowed <= 200 + 100 * burst["seconds"] + 10, burst
    assert allowed + burst["statuses"].get("429", 0) == 1000, burst["statuses"]
    assert burst["later"] == {"200": 5}
    # In sortd's error shape, with a hint when to try again.
    error = json.loads(burst["refused"]["body"])["error"]
    assert error["status"] == 429 and error["code"] == "too_many_requests", error
    assert burst["refused"]["headers"]["Retry-After"] == "1"
    assert "application/json" in burst["refused"]["headers"]["Content-Type"]
    # The limit is per client: the other one was never refused.
    assert neighbour["statuses"] == {"200": 50}
    # Connections in flight: past 64, the next request is refused at once.
    assert held["status"] == 429 and json.loads(held["body"])["error"]["code"] == "too_many_requests"
    # A body over the limit gets the same shape from the load balancer.
    limit = json.loads(urllib.request.urlopen(LOAD_URL, timeout=10).read())["limits"]
    request = urllib.request.Request(LOAD_URL, data=b" " * (limit["max_body_bytes"] + 1))
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 413
    assert json.loads(refused.value.read())["error"]["code"] == "body_too_large"


def test_firewall_lets_only_the_lb_reach_web_nodes(cluster):
    lab, _ = cluster
    web_01 = lab.hosts["web-01"].ip

    def reaches(source_host, url: str) -> bool:
        return http_status(lab, source_host, url) == "200"

    # This machine (the control machine) has no route to a web node: the
    # route lookup says so before any packet is sent, so the connection
    # below cannot leave for another network. Ansible got there through lb-01.
    route = subprocess.run(["ip", "route", "get", web_01], capture_output=True, text=True)
    assert route.returncode != 0 and "No route to host" in route.stderr, route
    with pytest.raises(OSError, match="No route to host"):
        socket.create_connection((web_01, 22), timeout=3).close()
    seen = {
        "lb-01 -> web-01:22": ssh_answers(lab, "lb-01", web_01),
        "web-02 -> web-01:22": ssh_answers(lab, "web-02", web_01),
        "other host -> web-01:22": ssh_answers(lab, None, web_01),
        "other host -> lb-01:22": ssh_answers(lab, None, lab.hosts["lb-01"].ip),
        "lb-01 -> web-01:80": reaches("lb-01", f"http://{web_01}/healthz"),
        "web-02 -> web-01:80": reaches("web-02", f"http://{web_01}/healthz"),
        "other host -> web-01:80": reaches(None, f"http://{web_01}/healthz"),
        "lb-01 -> web-01:5000": reaches("lb-01", f"http://{web_01}:5000/healthz"),
        "other host -> web-01:5000": reaches(None, f"http://{web_01}:5000/healthz"),
        "other host -> lb-01:80": reaches(None, f"http://{lab.hosts['lb-01'].ip}/healthz"),
    }
    measure("firewall: " + ", ".join(f"{path} {'answers' if ok else 'blocked'}" for path, ok in seen.items()))
    assert seen == {
        "lb-01 -> web-01:22": True,
        "web-02 -> web-01:22": False,
        "other host -> web-01:22": False,
        "other host -> lb-01:22": True,
        "lb-01 -> web-01:80": True,
        "web-02 -> web-01:80": False,
        "other host -> web-01:80": False,
        "lb-01 -> web-01:5000": False,
        "other host -> web-01:5000": False,
        "other host -> lb-01:80": True,
    }


def test_each_hosts_baseline_keys_only_security_updates_a_capped_journal(cluster, work):
    lab, hosts = cluster
    lb = lab.hosts["lb-01"]
    # Passwords that would let vagrant and root in, if sshd took passwords.
    lb.run(["chpasswd"], input="vagrant:sortd-lab-password\nroot:sortd-lab-password\n")
    askpass = work / "askpass"
    askpass.write_text("#!/bin/sh\necho sortd-lab-password\n")
    askpass.chmod(0o755)
    lb_ssh = next(node["ssh"] for node in json.loads(hosts.read_text())["nodes"] if node["host_name"] == "lb-01")
    for user in ("vagrant", "root"):
        attempt = subprocess.run(
            ["ssh", "-p", str(lb_ssh["port"]), "-o", f"UserKnownHostsFile={lb_ssh['known_hosts']}",
             "-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password,keyboard-interactive",
             "-o", "NumberOfPasswordPrompts=1", "-o", "ConnectTimeout=10", f"{user}@{lb_ssh['host']}", "echo", "in"],
            env=dict(os.environ, SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force"),
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        assert attempt.returncode == 255 and "Permission denied (publickey)" in attempt.stderr, (user, attempt)
    for node in ["lb-01", *WEB]:
        host = lab.hosts[node]
        sshd = set(host.run(["sshd", "-T"]).stdout.splitlines())
        assert {"permitrootlogin no", "passwordauthentication no", "kbdinteractiveauthentication no"} <= sshd, node
        assert host.run(["apt-config", "dump", "APT::Periodic::Unattended-Upgrade"]).stdout.strip() == \
            'APT::Periodic::Unattended-Upgrade "1";', node
        assert "Debian-Security" in host.run(["apt-config", "dump", "Unattended-Upgrade::Origins-Pattern"]).stdout
        assert host.run(["systemctl", "is-enabled", "apt-daily-upgrade.timer"]).stdout.strip() == "enabled"
        journal = host.run(["journalctl", "-b", "-t", "systemd-journald", "-o", "cat", "--grep", "System Journal"]).stdout
        # Its own report when it started: "... is 16M, max 500M, 484M free." (bookworm: 500.0M)
        assert re.findall(r"max ([0-9.]+[KMG])", journal)[-1] in ("500M", "500.0M"), (node, journal)
    measure("host baseline: password logins to lb-01 as vagrant and root refused (publickey only); on all 4 "
            "nodes sshd -T keys only and no root, daily security updates, the journal capped at 500M")


def test_losing_sortd_on_a_node_fails_no_request(cluster, work):
    lab, _ = cluster
    node = lab.hosts["web-02"]
    with under_load(LOAD_URL, work) as load:
        node.run(["systemctl", "stop", "sortd.socket", "sortd.service"])
        time.sleep(5)
        node.run(["systemctl", "start", "sortd.socket", "sortd.service"])
        back = served(lab, "web-02")
        # The LB tries it again after fail_timeout (10 s).
        wait_until(lambda: served(lab, "web-02") > back, 30, "traffic back on web-02")
        returned = served(lab, "web-02") - back
    measure(f"sortd stopped on web-02 for 5 s: {load['requests']} requests, {load['failed']} failed; "
            f"{returned} answered by web-02 after it came back")
    assert load["failed"] == 0, load["failures"]


def test_losing_a_whole_node_fails_no_request(cluster, work):
    lab, _ = cluster
    with under_load(LOAD_URL, work) as load:
        lab.stop_host("web-03")
        time.sleep(5)
        lab.start_host("web-03")
        # Counters restart with the node; the LB tries it again after fail_timeout (10 s).
        wait_until(lambda: served(lab, "web-03") > 0, 60, "traffic back on web-03")
        returned = served(lab, "web-03")
    measure(f"web-03 powered off for 5 s and booted again: {load['requests']} requests, "
            f"{load['failed']} failed; {returned} answered by web-03 after it came back")
    assert load["failed"] == 0, load["failures"]


def test_a_rolling_upgrade_fails_no_request_and_holds_the_deploy_lock(cluster, debs, work):
    # One load loop over two runs: a rolling upgrade, which holds the deploy
    # lock; a second deployment meanwhile refuses at once, naming the holder;
    # a third, a rollback to a .deb file of the control node told to wait for
    # the lock, runs after it. Neither the upgrade nor the rollback fails a
    # request.
    lab, hosts = cluster
    old, new = (version_of(deb) for deb in debs)
    holder_file = f"{LOCK}/holder.json"  # written once the lock is taken

    def start(*args: str):
        return start_playbook(hosts, *args)

    def lock_taken() -> bool:
        return lab.hosts["lb-01"].run(["test", "-s", holder_file], check=False).returncode == 0

    assert [version_on(lab, node) for node in WEB] == [old] * 3
    with under_load(LOAD_URL, work, max_seconds=600) as load:
        started = time.monotonic()
        first = start("-e", f"release_deb={debs[1]}")
        wait_until(lock_taken, 60, "the first run's lock")
        asked = time.monotonic()
        refused = finish(start("-e", f"release_deb={debs[1]}"), check=False)
        refused_in = time.monotonic() - asked
        waiting = start("-e", f"sortd_rollback={debs[0]}", "-e", "lock_wait=300")
        first_output = finish(first)
        took = time.monotonic() - started
        waited_output = finish(waiting)
    measure(f"rolling upgrade of 3 web nodes, one at a time: {took:.1f}s, then a rollback to a .deb file "
            f"that waited for the lock; {load['requests']} requests, {load['failed']} failed; "
            f"slowest {load['slowest']:.2f}s")
    holder = next((line for line in refused.splitlines() if "Another run holds the deploy lock" in line), "")
    measure(f"deploy lock: a second run refused in {refused_in:.1f}s: {holder.strip()[:300]}")
    assert load["failed"] == 0, load["failures"]
    assert "Another run holds the deploy lock on lb-01" in refused and f"deploy {new}" in refused, \
        refused[-3000:]
    assert "ansible/unlock.yaml" in refused
    # The first upgraded every node, then the waiting one rolled each back
    # (read from the nodes' histories: the waiting run may start on web-01
    # as soon as the first run ends); the upgrade went one node at a time:
    # the install task ran in three batches of one node.
    assert old != new
    for node in WEB:
        steps = [(e["action"], e["from"], e["to"], e["result"]) for e in history(lab, node)]
        assert steps[-2:] == [("deploy", old, new, "ok"), ("rollback", new, old, "ok")], (node, steps)
    installs = re.findall(r"TASK \[web : Install the sortd package\].*\n(?:.*\n)*?(changed|ok|fatal): \[(\S+)\]",
                          first_output)
    assert [node for _, node in installs] == WEB, installs
    # Which build answered stays behind the load balancer (the rollout asks
    # each node itself): no answer through it carried X-Sortd-Version.
    assert load["versions"] == {"-": load["requests"]}, load["versions"]
    # The waiting one waited, then rolled back.
    assert "RETRYING" in waited_output and all(recap(waited_output)[node]["changed"] > 0 for node in WEB)
    assert [version_on(lab, node) for node in WEB] == [old] * 3
    assert not lock_taken()

    # A run killed while it holds the lock leaves it; the next refuses until
    # the lock is broken with the documented command.
    killed = start("-e", f"release_deb={debs[1]}")
    wait_until(lock_taken, 60, "the killed run's lock")
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait(timeout=30)
    assert "Another run holds the deploy lock" in finish(start("-e", f"release_deb={debs[1]}"), check=False)
    broke = finish(start_playbook(hosts, playbook_file="ansible/unlock.yaml"))
    assert "Broke the deploy lock of" in broke, broke[-3000:]
    # Killed once it held the lock, before its web play: no node changed.
    assert [version_on(lab, node) for node in WEB] == [old] * 3
    # Nor does any other answer through the load balancer show the version:
    # headers and bodies.
    for path in ("/", "/healthz", "/nowhere"):
        request = urllib.request.Request(f"http://127.0.0.1:{LB_PORT}{path}")
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                seen = str(answer.headers) + answer.read().decode()
        except urllib.error.HTTPError as error:
            seen = str(error.headers) + error.read().decode()
        assert old not in seen and "X-Sortd-Version" not in seen, (path, seen)


def test_a_silent_node_costs_a_request_at_most_3_seconds(cluster, work):
    # web-01's link is cut (its port on the lab's bridge goes down): packets
    # to it vanish, as with a pulled cable or a hung kernel, and requests on
    # the load balancer's open connections to it get no answer at all.
    lab, _ = cluster
    port = ["ip", "-n", lab.netns, "link", "set", "vb-web-01"]
    with under_load(LOAD_URL, work) as load:
        subprocess.run([*port, "down"], check=True)
        try:
            time.sleep(20)
        finally:
            subprocess.run([*port, "up"], check=True)
        time.sleep(2)
    measure(f"web-01 silent for 20 s: {load['requests']} requests, {load['failed']} failed; "
            f"p50 {load['p50'] * 1000:.0f} ms, p99 {load['p99'] * 1000:.0f} ms, slowest {load['slowest']:.2f}s")
    assert load["failed"] == 0, load["failures"]
    assert load["slowest"] <= 3.0


SLOWLORIS = """
import resource, socket, sys, time
resource.setrlimit(resource.RLIMIT_NOFILE, (4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
target, count, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
opened = []
for _ in range(count):
    try:
        conn = socket.create_connection((target, 80), timeout=5)
        conn.sendall(b"GET / HTTP/1.1\\r\\nHost: lb\\r\\n")
        opened.append(conn)
    except OSError:
        pass
print(len(opened), flush=True)
end = time.monotonic() + seconds
while time.monotonic() < end:
    time.sleep(5)
    for conn in opened:
        try:
            conn.sendall(b"X-Slow: 1\\r\\n")
        except OSError:
            pass
for conn in opened:
    conn.close()
"""


def test_slow_clients_do_not_stop_normal_requests(cluster, work):
    # 2,000 connections from another host on the network send a header line
    # every 5 s for 30 s (slowloris), while the load loop goes on.
    lab, _ = cluster
    with under_load(LOAD_URL, work) as load:
        slow = subprocess.run(lab.in_netns([sys.executable, "-c", SLOWLORIS, lab.hosts["lb-01"].ip, "2000", "30"]),
                              capture_output=True, text=True, timeout=120)
    opened = int(slow.stdout.split()[0]) if slow.stdout.split() else 0
    measure(f"{opened} slow connections to lb-01 for 30 s: {load['requests']} normal requests, "
            f"{load['failed']} failed; p99 {load['p99'] * 1000:.0f} ms, slowest {load['slowest']:.2f}s")
    assert opened >= 1900, slow.stderr[-2000:]
    assert load["failed"] == 0, load["failures"]
    assert load["p99"] < 1.0


def test_a_bad_release_stops_the_rollout_and_is_rolled_back(cluster, debs, work):
    # A release that installs and starts but answers with another build's
    # version: only the health gate can stop it. (One whose installation
    # fails: the canary's test in tests/test_monitoring.py.)
    lab, hosts = cluster
    old, new = (version_of(deb) for deb in debs)
    # The newer release's build, at a higher version, over the older one.
    bad = stale_release(debs[1], work)
    bad_version = version_of(bad)
    with under_load(LOAD_URL, work) as load:
        output, took = deploy(cluster, bad, "-e", "web_health_retries=5", "-e", "web_health_delay=1",
                              check=False)
    message = next((line for line in output.splitlines() if "failed on web-01" in line), "")
    measure(f"bad release: rollout stopped after web-01 in {took:.1f}s; {load['requests']} requests, "
            f"{load['failed']} failed; {message.strip()[:300]}")
    assert recap(output)["web-01"]["failed"] == 1
    assert "web-02" not in recap(output) or recap(output)["web-02"]["changed"] == 0
    assert f"sortd {bad_version} failed on web-01: Wait until sortd answers ok, with the expected version" in output, \
        output[-3000:]
    assert f"Rolled back to {old}" in output
    # The message says what the node answered instead.
    assert f"(it says it is {new})" in output, output[-3000:]
    assert [version_on(lab, node) for node in WEB] == [old] * 3
    assert load["failed"] == 0, load["failures"]


def test_roll_back_to_the_previous_release_rolling_under_load(cluster, debs, work):
    # (A rollback to a .deb file of the control node: the lock's test above;
    # to a version kept on the nodes, by name: the TLS test below.)
    lab, _ = cluster
    old, new = (version_of(deb) for deb in debs)
    # The release each node ran before the older one it runs: the newer.
    assert [version_on(lab, node) for node in WEB] == [old] * 3
    with under_load(LOAD_URL, work) as load:
        _, took = deploy(cluster, debs[1], "-e", "sortd_rollback=previous")
    measure(f"rollback to the previous release, rolling: {took:.1f}s; {load['requests']} requests, "
            f"{load['failed']} failed")
    assert load["failed"] == 0, load["failures"]
    assert [version_on(lab, node) for node in WEB] == [new] * 3


def test_a_run_with_a_node_unreachable_stops_before_the_lock(cluster, debs):
    lab, hosts = cluster
    running = [version_on(lab, node) for node in WEB]
    # A node that cannot be reached stops the run before the lock is taken
    # and before any node changes.
    lab.hosts["web-03"].run(["systemctl", "stop", "ssh"])
    try:
        started = time.monotonic()
        output, _ = deploy(cluster, debs[0], check=False)
        took = time.monotonic() - started
    finally:
        lab.hosts["web-03"].run(["systemctl", "start", "ssh"])
    measure(f"a run with web-03 unreachable stopped in {took:.1f}s, before the lock")
    assert "fatal: [web-03]" in output and "Take the cluster's deploy lock" not in output, output[-3000:]
    assert all(counts["changed"] == 0 for counts in recap(output).values()), output[-3000:]
    assert [version_on(lab, node) for node in WEB] == running and not lock_held(lab)


def test_tls_from_the_environments_file_and_no_run_that_leaves_it_out(cluster, debs, work):
    lab, hosts = cluster
    old, new = (version_of(deb) for deb in debs)
    assert [version_on(lab, node) for node in WEB] == [new] * 3
    ca_dir = work / "tls"
    # The environment's settings in its file, as in production: no -e.
    environment = work / "tls.json"
    production = json.loads(hosts.read_text())
    production["settings"]["lb"].update(lb_tls=True, lb_https_port=HTTPS_PORT, lb_ca_dir=str(ca_dir))
    environment.write_text(json.dumps(production))
    # The same run rolls the web nodes back to a version they keep, by name,
    # all at once (no load runs here; rolling under load is the other
    # rollbacks' test); releases past web_keep_releases are then removed,
    # and the running one stays.
    _, took = playbook(environment, debs[1], "-e", f"sortd_rollback={old}", "-e", "web_keep_releases=1", *AT_ONCE)
    measure(f"TLS turned on, and a rollback to a named version kept on the nodes, at once: {took:.1f}s")
    assert [version_on(lab, node) for node in WEB] == [old] * 3
    kept = lab.hosts["web-01"].sh(f"ls {STATE_DIR}/releases").split()
    assert kept == [debs[0].name], kept
    # A version no node keeps: the play stops before touching any, and says
    # which versions there are.
    output, _ = playbook(environment, debs[1], "-e", f"sortd_rollback={new}", check=False)
    assert f"keeps no release {new} to roll back to" in output and old in output, output[-3000:]
    assert [version_on(lab, node) for node in WEB] == [old] * 3
    # Every step is in each node's history (the bad release's failure too).
    entries = history(lab, "web-02")
    steps = [(e["action"], e["from"], e["to"], e["result"]) for e in entries]
    assert steps[-2:] == [("rollback", old, new, "ok"), ("rollback", new, old, "ok")], steps
    assert ("deploy", old, new, "ok") in steps and ("rollback", new, old, "ok") in steps[:-2], steps
    assert all(e["by"].count("@") == 1 for e in entries)
    ca = ca_dir / "lb-01-ca.crt"

    def sorts_over_tls() -> bool:
        curl = subprocess.run(["curl", "-sS", "--cacert", str(ca), f"https://127.0.0.1:{HTTPS_PORT}/", "--data-binary",
                               SORT_BODY.decode()], capture_output=True, text=True)
        return curl.stdout == SORTED

    assert sorts_over_tls()
    # TLS 1.2 and 1.3 only.
    old_tls = subprocess.run(["curl", "-sS", "--cacert", str(ca), "--tls-max", "1.1", f"https://127.0.0.1:{HTTPS_PORT}/healthz"],
                             capture_output=True, text=True)
    assert old_tls.returncode != 0
    context = ssl.create_default_context(cafile=str(ca))
    with urllib.request.urlopen(f"https://127.0.0.1:{HTTPS_PORT}/healthz", context=context, timeout=10) as answer:
        assert answer.status == 200
    # Plain HTTP is redirected, keeping the method (308).
    request = urllib.request.Request(LOAD_URL, data=SORT_BODY)
    with pytest.raises(urllib.error.HTTPError) as redirect:
        urllib.request.build_opener(NoRedirect).open(request, timeout=10)
    assert redirect.value.code == 308
    assert redirect.value.headers["Location"] == f"https://127.0.0.1:{HTTPS_PORT}/"
    # The web page, through the LB over TLS, in a real browser.
    check_page_sorts(f"https://127.0.0.1:{HTTPS_PORT}/", work / "chromium", insecure_certs=True)
    measure(f"TLS: curl --cacert <generated CA> https://127.0.0.1:{HTTPS_PORT} sorts; TLS <= 1.1 refused; "
            f"http://127.0.0.1:{LB_PORT} answers 308 to https://127.0.0.1:{HTTPS_PORT}/; "
            "the web page sorts there in chromium")

    # The same upgrade from a file without the settings (the lab's own) is
    # refused before any node changes, and TLS stays served.
    output, _ = deploy(cluster, debs[1], check=False)
    assert "lb-01: lb_tls would go from true to false" in output, output[-3000:]
    assert "-e sortd_confirm_downgrade=lb_tls" in output and "Take the cluster's deploy lock" not in output
    assert all(counts["changed"] == 0 for counts in recap(output).values()), output[-3000:]
    assert sorts_over_tls()
    # (A run whose load balancer's play fails releases the lock, and nginx
    # keeps serving what it served: tests/test_acme.py, its ACME server
    # down. A configuration nginx refuses is never loaded: the nginx role's
    # check before each reload, which the load balancer's changes notify
    # too; tests/test_deploy.py.)
    # Confirmed on purpose, the downgrade happens (-e values are strings,
    # and "false" is read as false): plain HTTP sorts again.
    deploy(cluster, debs[1], "-e", "lb_tls=false", "-e", "sortd_confirm_downgrade=lb_tls", *AT_ONCE)
    assert sort_at(LB_PORT) == SORTED
    measure("a run from a file without lb_tls: refused, changed=0, TLS still served; "
            "with -e sortd_confirm_downgrade=lb_tls: plain HTTP sorts")
    # The environment's SSH rule survived every run of this module (upgrades,
    # rollbacks, failed runs): web nodes still take SSH from the bastion alone.
    for web in WEB:
        address = lab.hosts[web].ip
        assert ssh_answers(lab, "lb-01", address) and not ssh_answers(lab, None, address), web


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def test_status_history_and_logs_of_the_fleet(cluster, debs):
    lab, hosts = cluster
    new = version_of(debs[1])

    def run(playbook_file: str, *args: str, check: bool = True) -> tuple[int, str]:
        process = start_playbook(hosts, *args, playbook_file=playbook_file)
        output = finish(process, check)
        return process.returncode, output

    code, status = run("ansible/status.yaml")
    assert f"All 3 web nodes healthy, running {new}" in status, status[-3000:]
    assert "web-02: installed " + new in status and "sortd.service active" in status
    # sortd stopped on one node: the command fails, naming it.
    lab.hosts["web-02"].run(["systemctl", "stop", "sortd.socket", "sortd.service"])
    try:
        code, status = run("ansible/status.yaml", check=False)
    finally:
        lab.hosts["web-02"].run(["systemctl", "start", "sortd.socket"])
    measure(f"status with sortd stopped on web-02: exit {code}; "
            f"{next((l.strip() for l in status.splitlines() if 'Unhealthy' in l), '')[:200]}")
    assert code != 0 and "Unhealthy: web-02." in status, status[-3000:]
    assert "web-02: installed " + new + ", answers nothing, sortd.service inactive" in status
    # The history of every node, and one node's journal.
    _, history = run("ansible/history.yaml", "-e", "history_lines=3")
    assert history.count('"action": "rollback"') >= 3 and '"result": "ok"' in history, history[-3000:]
    _, logs = run("ansible/logs.yaml", "--limit", "web-02", "-e", "logs_since='1 hour ago'",
                  "-e", "logs_grep=listening")
    assert "listening on unix:/run/sortd/sortd.sock" in logs and "web-01" not in logs, logs[-3000:]
