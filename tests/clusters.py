"""Helpers for the tests that deploy clusters: build the .deb, boot a cluster
file's nodes as test hosts, run the playbook against them as against cloud
hosts, read its recap, and put a bounded load on them."""

import base64
import fcntl
import http.client
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager, nullcontext
from pathlib import Path

import inventory
from testlab import Forward, HostSpec, Lab, cluster_lab, free_port
from testlab.hosts import wait_until

ROOT = Path(__file__).resolve().parent.parent
SORT_BODY = b'{"x1":"[5,3,9]","x2":"4"}'
SORTED = '{"sorted_list":[3,4,5,9]}'
# Where the deployment keeps its state on each node (history, releases,
# lock): sortd_state_dir, which ansible/group_vars/all.yaml owns.
STATE_DIR = re.search(r"^sortd_state_dir: (\S+)$", (ROOT / "ansible/group_vars/all.yaml").read_text(), re.M).group(1)
# scripts/run-tests runs streams of suites side by side; each but one
# shifts every port its clusters forward on 127.0.0.1 by this much, so that
# each can own "8080" (the default cluster's load balancer) at once.
PORT_OFFSET = int(os.environ.get("SORTD_TEST_PORT_OFFSET", "0"))


def forwarded(port: int) -> int:
    """Where a cluster file's 127.0.0.1:port is forwarded in this stream."""
    return port + PORT_OFFSET


LB_PORT = forwarded(8080)
# Ansible's output as plain text, for recap() and for failure messages.
PLAIN_ANSIBLE = {"ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"}


def build_deb(into: Path, revision: str | None = None, tree: Path = ROOT) -> Path:
    """Builds the .deb with debian/build in `tree` (this one, or a
    tree_copy), with the given Debian revision or its own (UTC time), and
    copies it into `into`; returns the copy's path. The build itself stays
    in the tree's target/debian (cargo deb removes older ones), where the
    web role finds the newest package."""
    return _built(into, [str(tree / "debian" / "build")], revision, cwd=tree, lock="build" if tree == ROOT else None)


def version_of(deb: Path) -> str:
    """A package's full Debian version, from its file name (sortd_VERSION_ARCH.deb)."""
    return deb.name.split("_")[1]


def build_foreign_deb(into: Path, arch: str, revision: str) -> Path:
    """The .deb for another architecture (debian/build-cross ARCH), copied
    into `into`."""
    return _built(into, [str(ROOT / "debian" / "build-cross"), arch], revision, lock="cross")


def tree_copy(folder: Path, release_build: bool = True) -> Path:
    """A copy of this tree in `folder`, as a clone of it would be: its
    tracked files as they are now, and (unless not wanted) its release
    build, so that a package built there compiles only sortd again.
    Returns `folder`."""
    shutil.rmtree(folder, ignore_errors=True)
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in filter(None, files.split("\0")):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, folder / name)
    if release_build:
        copy_release_build(folder)
    return folder


def copy_release_build(folder: Path) -> None:
    """This tree's release build (target/release), if any, into `folder`'s
    target/, so that a build there compiles sortd alone. Not while another
    stream builds here: cargo replaces files of target/release as it goes (a
    copy taken then failed "cp: cannot stat")."""
    (folder / "target").mkdir(exist_ok=True)
    with build_lock():
        if (ROOT / "target" / "release").is_dir():
            subprocess.run(["cp", "-a", str(ROOT / "target" / "release"), str(folder / "target")], check=True)


def build_patched_deb(into: Path, revision: str, patches: dict[str, tuple[str, str]]) -> Path:
    """The .deb built from a patched copy of the source in a temporary
    folder (never a switch in the product): `patches` maps a file to the
    text it must contain once and what replaces it. The copy starts from this
    tree's release build, so only sortd itself is compiled again."""
    source = tree_copy(into / f"source-{revision}")
    for name, (old, new) in patches.items():
        text = (source / name).read_text()
        assert text.count(old) == 1, f"{name}: the patch's text is not there exactly once"
        (source / name).write_text(text.replace(old, new))
    try:
        return build_deb(into, revision, tree=source)
    finally:
        shutil.rmtree(source, ignore_errors=True)


def broken_release(deb: Path, work: Path) -> Path:
    """The same package with a sortd that cannot start, at a higher version:
    its installation fails (dpkg's postinst cannot start the service)."""
    return _repackaged(deb, work, "broken", "#!/bin/sh\necho 'sortd: this release is broken' >&2\nexit 1\n")


def stale_release(deb: Path, work: Path) -> Path:
    """The same build at a higher version, as from a tree that was not
    rebuilt: it installs and starts, but answers with the build's own
    version, not the package's. Only the deployment's health gate sees it."""
    return _repackaged(deb, work, "stale")


def _repackaged(deb: Path, work: Path, name: str, binary: str | None = None) -> Path:
    unpacked = work / name
    shutil.rmtree(unpacked, ignore_errors=True)
    subprocess.run(["dpkg-deb", "-R", str(deb), str(unpacked)], check=True)
    if binary is not None:
        (unpacked / "usr/bin/sortd").write_text(binary)
    control = unpacked / "DEBIAN/control"
    version = re.search(r"^Version: (.*)$", control.read_text(), re.M).group(1) + f"+{name}"
    control.write_text(re.sub(r"^Version: .*$", f"Version: {version}", control.read_text(), flags=re.M))
    out = work / f"sortd_{version}_amd64.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(unpacked), str(out)], check=True,
                   capture_output=True)
    return out


def _built(into: Path, command: list[str], revision: str | None, cwd: Path = ROOT, lock: str | None = None) -> Path:
    """Runs a build, holding build_lock(lock) if named: a copy of the tree
    builds in its own target/, and a cross build in its own cache and
    target/cross, so neither waits for this tree's native builds."""
    env = dict(os.environ, **({"SORTD_DEB_REVISION": revision} if revision else {}))
    if cwd != ROOT:
        env.pop("CARGO_TARGET_DIR", None)  # a copy builds in its own tree
    with build_lock(lock) if lock else nullcontext():
        result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
        assert result.returncode == 0, f"{shlex.join(command)} in {cwd}: exit {result.returncode}\n{result.stderr[-4000:]}"
        built = Path(result.stdout.strip().splitlines()[-1])
        return Path(shutil.copy(built, into / built.name))


@contextmanager
def build_lock(name: str = "build"):
    """One build of a kind at a time in this tree, whichever stream asks.
    "build", the native one: cargo deb removes the older packages of
    target/debian, another stream's included, and no copy of its build may
    be taken while one runs. "cross": debian/build-cross replaces the
    packages of target/cross/debian."""
    (ROOT / "target").mkdir(exist_ok=True)
    with open(ROOT / "target" / f".tests-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@contextmanager
def host_with_package(name: str, ip: str, deb: Path):
    """A lab of one test host (trixie amd64) with `deb` installed from apt,
    its port 80 forwarded to 127.0.0.1; yields (host, forwarded port)."""
    port = free_port()
    with Lab(name) as lab:
        host = lab.boot(HostSpec(f"{name}-01", ip, [Forward(port, 80)]))
        host.put(deb, "/root/sortd.deb")
        host.run(["apt-get", "update", "-q"])
        host.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "/root/sortd.deb"])
        yield host, port


@contextmanager
def cluster_up(cluster: Path, name: str, archs: dict[str, str] | None = None, bastion: str | None = None):
    """The cluster file's nodes booted as test hosts (those in `archs` of that
    architecture; with a `bastion`, the others reached only through it),
    removed on exit; yields the lab, the ssh-block cluster file that reaches
    them, and the boot time. Forwarded ports are shifted by PORT_OFFSET."""
    with tempfile.TemporaryDirectory(prefix="sortd-cluster-") as work:
        if PORT_OFFSET:
            shifted = json.loads(cluster.read_text())
            for node in shifted["nodes"]:
                for mapping in node.get("port_mappings", []):
                    mapping["host_port"] += PORT_OFFSET
            if "secrets" in shifted:  # still the file beside the original
                shifted["secrets"] = str(inventory.secrets_file(cluster, shifted))
            cluster = Path(work) / cluster.name
            cluster.write_text(json.dumps(shifted))
        booting = cluster_lab(cluster, name=name, archs=archs, bastion=bastion)
        with booting.lab as lab:
            started = time.monotonic()
            hosts = booting.up()
            yield lab, hosts, time.monotonic() - started


def start_playbook(cluster: Path, *args: str, playbook_file: str = "ansible/playbook.yaml") -> subprocess.Popen:
    """ansible-playbook started as a user would start it (its own process
    group, so that a test can kill it whole); output on stdout."""
    environment = dict(os.environ, SORTD_CLUSTER=str(cluster), **PLAIN_ANSIBLE)
    return subprocess.Popen(["ansible-playbook", playbook_file, *args], cwd=ROOT, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def finish(run: subprocess.Popen, check: bool = True) -> str:
    output, _ = run.communicate(timeout=900)
    if check:
        assert run.returncode == 0, output[-8000:]
    return output


def playbook(cluster: Path, deb: Path, *args: str, check: bool = True) -> tuple[str, float]:
    """Runs ansible-playbook ansible/playbook.yaml as a user would, with the
    given .deb; returns its output and how long it took."""
    started = time.monotonic()
    output = finish(start_playbook(cluster, "-e", f"release_deb={deb}", *args), check)
    return output, time.monotonic() - started


def recap(output: str) -> dict[str, dict[str, int]]:
    """The PLAY RECAP counts per host."""
    hosts = {}
    for host, counts in re.findall(r"^(\S+)\s+:\s+(ok=.*)$", output, re.M):
        hosts[host] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", counts)}
    return hosts


# Ways to ask for /metrics that a path check on the raw URI would miss.
METRICS_SPELLINGS = [
    "/metrics", "/metrics/", "//metrics", "///metrics//", "/./metrics", "/x/../metrics", "/%2e/metrics",
    "/%6detrics", "/%6Detrics", "/metrics%2F", "/metrics?x=1", "/metrics/?x=1", "/METRICS", "/Metrics/",
    "/metrics#x",
]


def metrics_leaks(port: int) -> list[str]:
    """The spellings of /metrics that 127.0.0.1:port answers with metrics;
    each is sent exactly as written (http.client does not normalise)."""
    leaks = []
    for path in METRICS_SPELLINGS:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.request("GET", path)
            answer = connection.getresponse()
            if answer.status == 200 and b"# TYPE sortd_" in answer.read():
                leaks.append(path)
        finally:
            connection.close()
    return leaks


def served(lab, node: str) -> int:
    """Sort requests a web node answered 200, from its own /metrics (0 while
    nothing answers there: a node still booting)."""
    metrics = lab.hosts[node].run(["curl", "-s", "http://127.0.0.1/metrics"], check=False).stdout
    found = re.search(r'^sortd_http_requests_total\{route="/",method="POST",status="200"\} (\d+)', metrics, re.M)
    return int(found.group(1)) if found else 0


# The deploy lock, on lb-01 (the first node by name in the labs' clusters):
# the directory a run makes to take it.
LOCK = f"{STATE_DIR}/lock"


def lock_held(lab) -> bool:
    return lab.hosts["lb-01"].run(["test", "-e", LOCK], check=False).returncode == 0


def history(lab, node: str) -> list[dict]:
    """The node's deployment history: one entry per deployment, rollback and
    canary judgement."""
    lines = lab.hosts[node].run(["cat", f"{STATE_DIR}/history.jsonl"]).stdout.splitlines()
    return [json.loads(line) for line in lines]


def http_status(lab, source: str | None, url: str) -> str:
    """What a GET of `url` from `source` gets: the HTTP status, or "refused"
    when nothing answers within 3 s (a firewall drops it). `source` is a host
    of the lab, or None: a separate host on the lab's network (the bridge)."""
    result = run_from(lab, source, ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "3", url])
    return result.stdout if result.returncode == 0 else "refused"


def run_from(lab, source: str | None, command: list[str]) -> subprocess.CompletedProcess:
    """`command` on `source`, a host of the lab, or None: a separate host on
    the lab's network (the bridge). Never raises on its exit status."""
    if source is None:
        return subprocess.run(lab.in_netns(command), capture_output=True, text=True)
    return lab.hosts[source].run(command, check=False)


def measure(text: str) -> None:
    """A figure the closing notes quote (bench/cluster prints these lines)."""
    print(f"measure: {text}", flush=True)


def sort_at(port: int) -> str:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", data=SORT_BODY)
    with urllib.request.urlopen(request, timeout=10) as answer:
        return answer.read().decode()


# The load loop's pace: a request every 10 ms, from 4 kept-alive
# connections, so that any failure lasting 10 ms is seen. As fast as it
# could, the loop sent over 300 a second and took a sixth of a core from the
# playbook it watched and from the other streams (one no-change run of the
# 4-node cluster each: unloaded 97.8 s, paced 104.8 s, unpaced 110.8 s).
LOAD_RATE = 100


@contextmanager
def under_load(url: str, stop_dir: Path, max_seconds: float = 300, rate: float | None = LOAD_RATE,
               resend_on_close: bool = False):
    """Runs the lab's load loop against url until the block ends (bounded by
    max_seconds anyway), at `rate` requests a second (None: as fast as it
    can), sending a request again on a new connection where its kept-alive
    one was closed or reset before an answer (resend_on_close, as clients
    do); the yielded dict then holds its summary."""
    stop, ready = stop_dir / "stop-load", stop_dir / "load-ready"
    stop.unlink(missing_ok=True)
    ready.unlink(missing_ok=True)
    process = subprocess.Popen(
        [sys.executable, "-m", "testlab.load", url, "--threads", "4", "--max-requests", "1000000",
         "--max-seconds", str(max_seconds), "--stop-file", str(stop), "--ready-file", str(ready),
         *(["--rate", str(rate)] if rate else []), *(["--resend-on-close"] if resend_on_close else [])],
        stdout=subprocess.PIPE, text=True, cwd=ROOT)
    summary: dict = {}
    try:
        # The block starts once the loop has its first answer, not after a guess.
        wait_until(lambda: ready.exists() or process.poll() is not None, 30, "the load loop's first answer")
        assert ready.exists(), "the load loop ended before its first answer"
        yield summary
        time.sleep(1)
    finally:
        stop.touch()
        out, _ = process.communicate(timeout=60)
        summary.update(json.loads(out))


# Alertmanager's notices, taken by a webhook receiver on a lab host
# (start_receiver; a URL on RECEIVER_PORT of its loopback), which appends
# each to NOTICES, one JSON per line: when it came (the machine's clock,
# which every test host shares) and what it said.
RECEIVER_PORT = 5001
NOTICES = "/root/notices.jsonl"
RECEIVER = """
import http.server, json, time
class Notice(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        line = json.dumps({"received": time.time(), "notice": json.loads(body)})
        with open("%s", "a") as notices:
            notices.write(line + "\\n")
        self.send_response(200)
        self.end_headers()
http.server.HTTPServer(("127.0.0.1", %d), Notice).serve_forever()
""" % (NOTICES, RECEIVER_PORT)


def start_receiver(host) -> None:
    host.run(["systemd-run", "--unit", "sortd-test-webhook", "python3", "-c", RECEIVER])


def notices(host) -> list[tuple[str, str, str, float]]:
    """What the webhook on `host` received: (status, alert, instance, when)
    of every alert of every notice, in order."""
    text = host.run(["sh", "-c", f"cat {NOTICES} 2>/dev/null || true"]).stdout
    return [(alert["status"], alert["labels"]["alertname"], alert["labels"].get("instance", ""), entry["received"])
            for entry in map(json.loads, text.splitlines()) for alert in entry["notice"]["alerts"]]


def said(notices: list[tuple[str, str, str, float]]) -> list[tuple[str, str, str]]:
    return [notice[:3] for notice in notices]


# A monitoring node's Prometheus, through its forwarded port (9090), as its
# user (prometheus_web_user's default) with the environment's password.
PROMETHEUS = f"http://127.0.0.1:{forwarded(9090)}"


def basic_auth(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def prometheus_api(path: str, password: str) -> dict:
    request = urllib.request.Request(PROMETHEUS + path, headers=basic_auth("sortd", password))
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer)["data"]


def prometheus_status(authorization: dict[str, str]) -> int:
    """The HTTP status of Prometheus's API with these headers (401: it asks
    for its password)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(PROMETHEUS + "/api/v1/targets", headers=authorization),
                                    timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


def firing_alerts(password: str) -> set[tuple[str, str]]:
    """The alerts firing in Prometheus: (alert, instance)."""
    alerts = prometheus_api("/api/v1/alerts", password)["alerts"]
    return {(a["labels"]["alertname"], a["labels"]["instance"]) for a in alerts if a["state"] == "firing"}
