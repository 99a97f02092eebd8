#!/usr/bin/env python3
"""sortd under hostile bodies: memory and time, this build next to another.

Builds sortd at a base revision (--base REV, default HEAD) and from the
working tree, then drives each, on 127.0.0.1 only, with the shapes an
attacker would pick, one fresh process per shape so that each peak is its
own:

- bodies of the largest size: plain integers (the reference), 20-digit
  integers mixed with floats near 1e300, 300-digit integers at floats' exact
  values (each needs an exact tie-break), keys with empty lists, white
  space, one long string, deep brackets, and integers that fail at the end;
- 16 bodies of keys at once;
- 200 bodies of 1e6 integers (10 MB) at once, and the RSS 10 s later;
- a too-large body sent whole without `Expect: 100-continue` (urllib).

Each shape fills the default body limit (16 MiB). Prints one table: status
counts, peak RSS (VmHWM), CPU seconds, wall time.
Every request is bounded (timeouts), every process is stopped by PID.

Usage: bench/attack.py [--base REV]   (needs: cargo, git)
"""

import argparse
import concurrent.futures
import http.client
import itertools
import os
import random
import shutil
import signal
import socket
import string
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def build(rev: str | None, work: Path) -> Path:
    """sortd built at rev (None: the working tree); returns the binary."""
    if rev is None:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
        return ROOT / "target/release/sortd"
    tree = work / f"src-{rev}"
    tree.mkdir()
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    env = dict(os.environ, CARGO_TARGET_DIR=str(ROOT / "target/bench-base"))
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=tree, env=env, check=True)
    binary = work / f"sortd-{rev}"
    shutil.copy(ROOT / "target/bench-base/release/sortd", binary)
    return binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sortd:
    """One sortd process on a free port, stopped on exit."""

    def __init__(self, binary: Path) -> None:
        self.port = free_port()
        env = dict(os.environ, SORTD_LISTEN=f"127.0.0.1:{self.port}", RUST_LOG="warn")
        self.process = subprocess.Popen([str(binary)], env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit(f"{binary} did not listen")

    def status(self, field: str) -> float:
        return status_mib(Path(f"/proc/{self.process.pid}/status").read_text(), field)

    def cpu(self) -> float:
        return cpu_seconds(Path(f"/proc/{self.process.pid}/stat").read_text())

    def __enter__(self) -> "Sortd":
        return self

    def __exit__(self, *exc) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)


def status_mib(status: str, field: str) -> float:
    """A figure of a /proc/PID/status text in MiB (VmHWM: peak, VmRSS: now);
    0 when the field is missing."""
    for line in status.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(stat: str) -> float:
    """User and system CPU seconds of a /proc/PID/stat text."""
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def post(port: int, body: bytes, timeout: float = 60) -> str:
    """The status of one POST, or the name of the error instead of one."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", data=body)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            answer.read()
            return str(answer.status)
    except urllib.error.HTTPError as error:
        return str(error.code)
    except (OSError, http.client.HTTPException) as error:  # reset, cut short
        reason = getattr(error, "reason", None)  # URLError: what was under it
        return type(reason if isinstance(reason, BaseException) else error).__name__


def key_flood(size: int) -> bytes:
    alphabet = string.ascii_letters + string.digits
    parts, total = [], 2
    names = ("".join(t) for n in itertools.count(1) for t in itertools.product(alphabet, repeat=n))
    for name in names:
        item = f'"{name}":[]'
        if total + len(item) + 1 > size:
            break
        parts.append(item)
        total += len(item) + 1
    return ("{" + ",".join(parts) + "}").encode()


def filled(size: int, item) -> bytes:
    """A top-level array of item(rng) up to size bytes."""
    rng = random.Random(20261130)
    parts, total = [], 2
    while True:
        text = item(rng)
        if total + len(text) + 1 > size:
            return ("[" + ",".join(parts) + "]").encode()
        parts.append(text)
        total += len(text) + 1


def near_floats(rng: random.Random) -> str:
    return str(rng.randrange(10**19, 10**20)) if rng.random() < 0.45 else repr(rng.uniform(1e299, 1e300))


TIE_FLOATS = [random.Random(i).uniform(1e299, 1e300) for i in range(64)]


def at_floats(rng: random.Random) -> str:
    f = TIE_FLOATS[rng.randrange(len(TIE_FLOATS))]
    return str(int(f) + rng.randrange(-2, 3)) if rng.random() < 0.1 else repr(f)


def integers(count: int) -> bytes:
    return ("[" + ",".join(str((i * 7919) % 1_000_003 - 500_000) for i in range(count)) + "]").encode()


def run_shape(binary: Path, body: bytes, clients: int, settle: float = 0) -> dict:
    with Sortd(binary) as sortd:
        cpu, started = sortd.cpu(), time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            statuses = Counter(pool.map(lambda _: post(sortd.port, body), range(clients)))
        wall = time.monotonic() - started
        result = {"statuses": dict(statuses), "peak": sortd.status("VmHWM"), "cpu": sortd.cpu() - cpu,
                  "wall": wall}
        if settle:
            time.sleep(settle)
            result["after"] = sortd.status("VmRSS")
        return result


def shapes(limit: int) -> list[tuple[str, bytes, int, float]]:
    """The attacks for a body limit: (name, body, concurrent clients, seconds
    to wait before reading RSS again). tests/test_hostile.py replays them on a
    test host."""
    keys = key_flood(limit)
    return [
        ("integers (the reference)", filled(limit, lambda rng: str(rng.randrange(-10**18, 10**18))), 1, 0),
        ("20-digit integers and floats near 1e300", filled(limit, near_floats), 1, 0),
        ("300-digit integers at floats' exact values", filled(limit, at_floats), 1, 0),
        ("one body of keys with empty lists", keys, 1, 0),
        ("white space around one number", b"[" + b" " * (limit - 3) + b"1]", 1, 0),
        ("one long string value", b'{"a":"' + b"1" * (limit - 8) + b'"}', 1, 0),
        ("deep brackets", b"[" * (limit // 2) + b"]" * (limit // 2), 1, 0),
        ("integers, then a bad one at the end", filled(limit - 8, lambda rng: str(rng.randrange(10**6)))[:-1]
         + b",x]", 1, 0),
        ("16 bodies of keys at once", keys, 16, 0),
        ("200 x 1e6 integers at once, RSS 10 s later", integers(1_000_000), 200, 10),
        ("one 18 MiB body, no Expect (urllib)", b" " * (limit + 2 * 2**20), 1, 0),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="HEAD", help="revision to compare with (default HEAD)")
    args = parser.parse_args()
    base = subprocess.run(["git", "rev-parse", args.base], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="sortd-attack-") as work:
        builds = {f"base {base[:10]}": build(base, Path(work)), "this tree": build(None, Path(work))}
        print(f"{'shape':<44} {'build':<16} {'statuses':<28} {'peak MiB':>9} {'CPU s':>6} {'wall s':>6} "
              f"{'after MiB':>9}")
        for name, body, clients, settle in shapes(16 * 2**20):
            for label, binary in builds.items():
                r = run_shape(binary, body, clients, settle)
                after = f"{r['after']:9.1f}" if "after" in r else f"{'':>9}"
                statuses = ", ".join(f"{k}x{v}" for k, v in sorted(r["statuses"].items()))
                print(f"{name:<44} {label:<16} {statuses:<28} {r['peak']:9.1f} {r['cpu']:6.2f} "
                      f"{r['wall']:6.2f} {after}", flush=True)


if __name__ == "__main__":
    main()
