#!/usr/bin/env python3
"""sortd benchmark: sortd direct and behind nginx, next to nginx's own ceiling.

Everything runs on 127.0.0.1 and stops by itself: every wrk run is bounded in
time, every process this script starts is stopped by PID at the end, also on
failure. Prints one table; figures are from this run only (ratios are measured
side by side, so they mean more than absolute numbers on a shared machine).

Rows per body size: nginx `return 200` (the ceiling), nginx proxying to a
second nginx `return 200` over TCP (what TCP proxying alone costs), sortd
direct, nginx proxying to sortd over TCP, and nginx proxying to sortd on a
unix socket passed by systemd-socket-activate, as the package runs it.

With --base REV, sortd built at REV runs beside this tree's, in the same
run: its rows (direct and through nginx on a unix socket) follow this
tree's, with the ratio of this tree's req/s to the base's, and the 1e6
integers are timed for both. That is how a change shows it did not make
the normal paths slower.

Usage: bench/run.py [--duration SECONDS] [--base REV]
       (needs: cargo, git, and scripts/install-deps bench)
"""

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from attack import build, free_port, status_mib  # bench/attack.py, next to this file

ROOT = Path(__file__).resolve().parent.parent
SORTD = ROOT / "target" / "release" / "sortd"
CEILING_BODY = '{"sorted_list":[1,2,3,4,5,6,7,8,9,10]}'

NGINX_CONF = """
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    client_max_body_size {max_body_bytes};
    client_body_buffer_size 1m;
    upstream sortd {{ server 127.0.0.1:{sortd_port}; keepalive 64; }}
    upstream sortd_unix {{ server unix:{sortd_socket}; keepalive 64; }}
    upstream base_unix {{ server unix:{base_socket}; keepalive 64; }}
    upstream trivial {{ server 127.0.0.1:{trivial_port}; keepalive 64; }}
    # The cheapest possible upstream: nginx answering itself. Proxying to it
    # measures what nginx's proxying alone costs, with no application at all.
    server {{
        listen 127.0.0.1:{trivial_port};
        location / {{
            default_type application/json;
            return 200 '{ceiling}';
        }}
    }}
    server {{
        listen 127.0.0.1:{nginx_port};
        location = /ceiling {{
            default_type application/json;
            return 200 '{ceiling}';
        }}
        location = /proxy-ceiling {{
            proxy_pass http://trivial;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
        # As the package runs it: sortd on a unix socket systemd passes in.
        location = /unix {{
            proxy_pass http://sortd_unix/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
        location = /base-unix {{
            proxy_pass http://base_unix/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
        location / {{
            proxy_pass http://sortd;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class Processes:
    """Starts processes and stops exactly those, by PID."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen] = []

    def start(self, args, env=None, log=None) -> subprocess.Popen:
        process = subprocess.Popen(args, env=env, stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self.started.append(process)
        return process

    def stop(self, process: subprocess.Popen) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def stop_all(self) -> None:
        for process in reversed(self.started):
            self.stop(process)


def start_sortd(processes: Processes, env_extra: dict, binary: Path = SORTD) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = dict(os.environ, SORTD_LISTEN=f"127.0.0.1:{port}", RUST_LOG="warn", **env_extra)
    process = processes.start([str(binary)], env=env)
    wait_for_port(port)
    return process, port


def start_sortd_unix(processes: Processes, socket_path: Path, binary: Path = SORTD) -> subprocess.Popen:
    """sortd serving a unix socket passed by systemd-socket-activate, as the
    package's sortd.socket does (it starts sortd on the first connection)."""
    process = processes.start(["systemd-socket-activate", "-l", str(socket_path),
                               "-E", "RUST_LOG=warn", str(binary)])
    deadline = time.monotonic() + 10
    while not socket_path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"no socket at {socket_path}")
        time.sleep(0.05)
    # nginx's workers run as nobody here (the package gives group www-data
    # access through sortd.socket instead).
    socket_path.parent.chmod(0o755)
    socket_path.chmod(0o666)
    return process


def list_body(count: int, rng: random.Random) -> str:
    """The original clients' form: a Python-style list in a string."""
    numbers = ", ".join(str(rng.randint(-1_000_000, 1_000_000)) for _ in range(count))
    return json.dumps({"x1": f"[{numbers}]"})


def array_body(count: int, rng: random.Random, digits: int = 9) -> str:
    high = 10**digits
    return "[" + ",".join(str(rng.randrange(-high, high)) for _ in range(count)) + "]"


LATENCY = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(url: str, body_file: Path, duration: int, connections: int) -> dict:
    output = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "10s",
         "-s", str(ROOT / "bench" / "post.lua"), url],
        env=dict(os.environ, BODY_FILE=str(body_file)),
        capture_output=True, text=True, check=True, timeout=duration + 60,
    ).stdout
    latency = {p: float(v) * UNIT_MS[u] for p, v, u in LATENCY.findall(output)}
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    errors = (int(non_2xx.group(1)) if non_2xx else 0) + (sum(map(int, socket_errors.groups())) if socket_errors else 0)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p50": latency.get("50"),
        "p99": latency.get("99"),
        "errors": errors,
    }


def time_request(port: int, body_file: Path, runs: int) -> tuple[float, int]:
    """Median wall time of POSTing the file with curl, and the answer's size."""
    times = []
    size = 0
    for _ in range(runs):
        out = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{time_total} %{size_download}",
             "--data-binary", f"@{body_file}", f"http://127.0.0.1:{port}/"],
            capture_output=True, text=True, check=True, timeout=120,
        ).stdout.split()
        if out[0] != "200":
            raise SystemExit(f"request of {body_file.name} answered {out[0]}")
        times.append(float(out[1]) * 1000)
        size = int(out[2])
    return statistics.median(times), size


def peak_mib(pid: int) -> float:
    """The process's peak resident memory (VmHWM), in MiB."""
    return status_mib(Path(f"/proc/{pid}/status").read_text(), "VmHWM")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--base", help="a revision whose sortd runs beside this tree's")
    args = parser.parse_args()
    for tool in ("cargo", "nginx", "wrk", "curl"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            raise SystemExit(f"bench needs {tool}: scripts/install-deps bench")

    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    work = Path(tempfile.mkdtemp(prefix="sortd-bench-"))
    base = None
    if args.base:
        revision = subprocess.run(["git", "rev-parse", "--short", args.base], cwd=ROOT, check=True,
                                  capture_output=True, text=True).stdout.strip()
        base = build(revision, work)
    defaults = dict(line.split("=", 1) for line in subprocess.run(
        [str(SORTD), "--defaults"], capture_output=True, text=True, check=True).stdout.splitlines()
        if line and not line.startswith("#"))
    max_body_bytes = int(defaults["SORTD_MAX_BODY_BYTES"])
    rng = random.Random(20261123)
    processes = Processes()
    try:
        sortd, sortd_port = start_sortd(processes, {})
        sortd_socket = work / "sortd.sock"
        start_sortd_unix(processes, sortd_socket)
        base_socket = work / "base.sock"
        if base:
            _, base_port = start_sortd(processes, {}, base)
            start_sortd_unix(processes, base_socket, base)
        nginx_port = free_port()
        (work / "nginx.conf").write_text(NGINX_CONF.format(
            dir=work, sortd_port=sortd_port, sortd_socket=sortd_socket, base_socket=base_socket,
            nginx_port=nginx_port,
            trivial_port=free_port(), ceiling=CEILING_BODY, max_body_bytes=max_body_bytes))
        processes.start(["nginx", "-p", str(work), "-c", str(work / "nginx.conf"), "-g", "daemon off;"])
        wait_for_port(nginx_port)

        if base:
            print(f"base: sortd built at {args.base} ({base.name}), rows marked 'base'")
        print(f"sortd {SORTD.name} pid {sortd.pid} on :{sortd_port}, nginx on :{nginx_port}, "
              f"wrk -t2 -c{args.connections} -d{args.duration}s, {os.cpu_count()} cores shared by all")
        print()
        header = f"{'numbers':>8} {'target':<16} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'vs ceiling':>10}"
        print(header)
        print("-" * len(header))
        for count in (10, 1_000, 100_000):
            body_file = work / f"list-{count}.json"
            body_file.write_text(list_body(count, rng))
            targets = [
                ("nginx ceiling", f"http://127.0.0.1:{nginx_port}/ceiling"),
                ("nginx -> nginx", f"http://127.0.0.1:{nginx_port}/proxy-ceiling"),
                ("sortd direct", f"http://127.0.0.1:{sortd_port}/"),
                ("nginx -> sortd", f"http://127.0.0.1:{nginx_port}/"),
                ("nginx -> unix", f"http://127.0.0.1:{nginx_port}/unix"),
            ]
            if base:
                targets += [("base direct", f"http://127.0.0.1:{base_port}/"),
                            ("base nginx->unix", f"http://127.0.0.1:{nginx_port}/base-unix")]
            ceiling = None
            rps = {}
            for name, url in targets:
                result = wrk(url, body_file, args.duration, args.connections)
                ceiling = ceiling or result["rps"]
                rps[name] = result["rps"]
                ratio = result["rps"] / ceiling
                print(f"{count:>8} {name:<16} {result['rps']:>10.0f} {result['p50']:>8.2f} "
                      f"{result['p99']:>8.2f} {result['errors']:>6} {ratio:>9.0%}")
            if base:
                print(f"{'':>8} this tree / base: direct {rps['sortd direct'] / rps['base direct']:.2f}, "
                      f"through nginx (unix) {rps['nginx -> unix'] / rps['base nginx->unix']:.2f}")
        print()

        # Single large requests: limits raised for 1e7 (about 100 MB of JSON).
        processes.stop(sortd)
        raised = {"SORTD_MAX_BODY_BYTES": str(512 << 20), "SORTD_MAX_INFLIGHT_BYTES": str(512 << 20),
                  "SORTD_MAX_NUMBERS": "20000000"}
        big, big_port = start_sortd(processes, raised)
        big_base = start_sortd(processes, raised, base)[1] if base else None
        for count, runs in ((1_000_000, 5), (10_000_000, 3)):
            body_file = work / f"array-{count}.json"
            body_file.write_text(array_body(count, rng))
            mib = body_file.stat().st_size / 2**20
            # Each size on both builds in turn, so that a busy moment of the
            # machine does not fall on one build only.
            for label, port in (("", big_port), (" (base)", big_base)):
                if port is None:
                    continue
                median_ms, size = time_request(port, body_file, runs)
                print(f"{count:>10,} integers ({mib:.1f} MiB){label}: {median_ms:8.1f} ms median of {runs}, "
                      f"curl end to end on loopback ({size / 2**20:.1f} MiB answer)")
        print(f"  peak RSS after these: {peak_mib(big.pid):.0f} MiB (limits raised to 512 MiB / 2e7)")
        processes.stop(big)

        # Peak memory of the largest body under the default limits, fresh process.
        fresh, fresh_port = start_sortd(processes, {})
        idle = peak_mib(fresh.pid)
        body_file = work / "body-largest.json"
        count = 0
        parts = []
        size = 2
        while True:
            number = str(rng.randrange(-10**18, 10**18))
            if size + len(number) + 1 > max_body_bytes:
                break
            parts.append(number)
            size += len(number) + 1
            count += 1
        body_file.write_text("[" + ",".join(parts) + "]")
        median_ms, _ = time_request(fresh_port, body_file, 1)
        peak = peak_mib(fresh.pid)
        print(f"{max_body_bytes / 2**20:g} MiB body ({count:,} integers, default limits): {median_ms:.0f} ms; "
              f"peak RSS {peak:.1f} MiB (idle {idle:.1f} MiB)")
    finally:
        processes.stop_all()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
