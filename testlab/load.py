#!/usr/bin/env python3
"""A bounded HTTP load loop: POSTs sort requests with keep-alive from a few
threads until a request count, a time limit, or a stop file is reached, then
prints a JSON summary. Standard library only, so it runs inside test hosts.

    load.py URL [--threads 4] [--rate R] [--max-requests 20000]
            [--max-seconds 120] [--stop-file PATH] [--ready-file PATH]
            [--cafile PATH] [--resend-on-close]

An https URL is verified against the system's CAs, or --cafile's alone.
With --resend-on-close, a request whose kept-alive connection the server
had closed (no answer came on it: nginx closes its idle connections when
it reloads) is sent once more on a new one, as browsers and curl do; the
summary counts those in "resent", and a second failure as a failure.

With --rate, each thread sends its share of R requests a second, evenly
spaced (keep-alive connections then sit idle between requests, as a real
client's do); without, as fast as the answers come.

Every answer must be 200 with the expected sorted list; anything else (a
status, a wrong body, a refused or reset connection) counts as a failure.
The summary also counts answers by their X-Sortd-Version header (which build
of sortd answered, where a node's own nginx is asked), and gives the
latencies: p50, p99 and the slowest, failures included; and the failures:
each kind (the status and body, or the exception) with its count, the
first 20 in full, and when each of the first 200 was sent (the clock's
seconds, time.time()), to tell a request in flight at a fault from one
sent after it. The ready file, if given, is made at the first answer:
the loop is running.
"""

import argparse
import http.client
import json
import ssl
import threading
import time
import urllib.parse
from collections import Counter
from pathlib import Path

BODY = b'{"x1": "[5, 3, 9]", "x2": "4", "x3": [8, -1]}'
EXPECTED = b'{"sorted_list":[-1,3,4,5,8,9]}'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--rate", type=float, help="requests a second, all threads together")
    parser.add_argument("--max-requests", type=int, default=20000)
    parser.add_argument("--max-seconds", type=float, default=120)
    parser.add_argument("--stop-file")
    parser.add_argument("--ready-file")
    parser.add_argument("--cafile")
    parser.add_argument("--resend-on-close", action="store_true")
    args = parser.parse_args()
    url = urllib.parse.urlsplit(args.url)
    tls = ssl.create_default_context(cafile=args.cafile) if url.scheme == "https" else None
    deadline = time.monotonic() + args.max_seconds
    lock = threading.Lock()
    counts: Counter = Counter()
    failures: list[str] = []
    # Every failure by kind: the answer (status and body) or the exception.
    kinds: Counter = Counter()
    versions: Counter = Counter()
    latencies: list[float] = []
    failed_at: list[float] = []

    def stop() -> bool:
        return (time.monotonic() > deadline or counts["sent"] >= args.max_requests
                or (args.stop_file is not None and Path(args.stop_file).exists()))

    interval = args.threads / args.rate if args.rate else 0.0

    def record_failure(kind: str, text: str, sent_at: float) -> None:
        """One failed request (the lock held): its kind, its text (the
        first 20) and when it was sent (the first 200)."""
        counts["failed"] += 1
        kinds[kind] += 1
        if len(failures) < 20:
            failures.append(text)
        if len(failed_at) < 200:
            failed_at.append(sent_at)

    def connect() -> http.client.HTTPConnection:
        if tls is None:
            return http.client.HTTPConnection(url.hostname, url.port or 80, timeout=15)
        return http.client.HTTPSConnection(url.hostname, url.port or 443, timeout=15, context=tls)

    def post(connection: http.client.HTTPConnection) -> http.client.HTTPResponse:
        connection.request("POST", url.path or "/", BODY, {"Content-Type": "application/json"})
        return connection.getresponse()

    def worker(index: int) -> None:
        connection = None
        due = time.monotonic() + index * interval / args.threads  # the threads take turns
        while not stop():
            if interval:
                now = time.monotonic()
                time.sleep(max(0.0, due - now))
                due = max(due, now) + interval  # no burst to catch up after a slow answer
            with lock:
                counts["sent"] += 1
            started = time.monotonic()
            sent_at = time.time()
            try:
                reused = connection is not None
                if connection is None:
                    connection = connect()
                try:
                    response = post(connection)
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ssl.SSLEOFError):
                    if not (args.resend_on_close and reused):
                        raise
                    with lock:
                        counts["resent"] += 1
                    connection.close()
                    connection = connect()
                    response = post(connection)
                body = response.read()
                if args.ready_file is not None and not counts["answered"]:
                    Path(args.ready_file).touch()
                counts["answered"] += 1
                ok = response.status == 200 and body == EXPECTED
                with lock:
                    latencies.append(time.monotonic() - started)
                    versions[response.getheader("X-Sortd-Version") or "-"] += 1
                    if ok:
                        counts["ok"] += 1
                    else:
                        answer = f"{response.status} {body[:200]!r}"
                        record_failure(answer, answer, sent_at)
                if response.getheader("Connection", "").lower() == "close":
                    connection.close()
                    connection = None
            except (OSError, http.client.HTTPException) as error:
                with lock:
                    latencies.append(time.monotonic() - started)
                    record_failure(type(error).__name__, f"{type(error).__name__}: {error}", sent_at)
                if connection is not None:
                    connection.close()
                connection = None

    began = time.monotonic()
    threads = [threading.Thread(target=worker, args=(index,)) for index in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps({
        "requests": counts["ok"] + counts["failed"],
        "ok": counts["ok"],
        "failed": counts["failed"],
        "resent": counts["resent"],
        "seconds": round(time.monotonic() - began, 2),
        "failures": failures,
        "failure_kinds": dict(kinds),
        "failed_at": failed_at,
        "versions": dict(versions),
        **latency_summary(sorted(latencies)),
    }))


def latency_summary(ordered: list[float]) -> dict[str, float]:
    """p50, p99 and the slowest, in seconds, of sorted latencies."""
    if not ordered:
        return {"p50": 0.0, "p99": 0.0, "slowest": 0.0}
    def at(share: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))], 4)

    return {"p50": at(0.50), "p99": at(0.99), "slowest": round(ordered[-1], 4)}


if __name__ == "__main__":
    main()
