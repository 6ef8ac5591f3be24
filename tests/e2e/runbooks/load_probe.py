#!/usr/bin/env python3
"""Bounded load probe for the rollout runbook test: GET one URL through the gateway at a fixed rate,
one new TLS connection per request (the way a careful client sees a reload), trusting only the given CA,
and record the status and the X-Hyhome-Version header of every answer.

    load_probe.py --url https://api.hyhome.localhost:8443/healthz --connect 127.0.0.1 \\
        --cacert stack/secrets/certs/rootCA.pem --rate 20 --stop-file /tmp/x.stop --max-seconds 300 \\
        --out probe.json

--workers clients share the rate. It runs until --stop-file exists (then 1 s more) or --max-seconds
pass, and writes a JSON summary: requests, failed (connection errors and non-2xx), per-version counts,
when each version was first and last seen (send times, seconds from the start), the sequence of versions
in the order the answers came back (consecutive duplicates collapsed: clients overlap, so old and new
can interleave around the switch), the first failures. Exit 0 always: the test decides.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import ssl
import sys
import threading
import time
import urllib.parse


class _Conn(http.client.HTTPSConnection):
    """HTTPS to a fixed address, with SNI and certificate checks for the URL's host name."""

    def __init__(self, host, port, connect_to, **kw):
        super().__init__(host, port, **kw)
        self._connect_to = connect_to

    def connect(self):
        sock = socket.create_connection((self._connect_to, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def one(url, connect_to, ctx, timeout):
    parts = urllib.parse.urlsplit(url)
    conn = _Conn(parts.hostname, parts.port or 443, connect_to, context=ctx, timeout=timeout)
    try:
        conn.request("GET", parts.path or "/", headers={"Connection": "close"})
        resp = conn.getresponse()
        resp.read()
        return resp.status, resp.getheader("X-Hyhome-Version")
    finally:
        conn.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--connect", default="127.0.0.1", help="address to connect to (the gateway)")
    ap.add_argument("--cacert", required=True)
    ap.add_argument("--rate", type=float, default=20.0, help="requests per second")
    ap.add_argument("--workers", type=int, default=16, help="concurrent clients sharing the rate")
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--stop-file", required=True)
    ap.add_argument("--max-seconds", type=float, default=300.0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    ctx = ssl.create_default_context(cafile=args.cacert)
    started = time.monotonic()
    lock = threading.Lock()
    stop = threading.Event()
    state = {"total": 0, "failed": 0}
    versions: dict[str, int] = {}
    seen: dict[str, list[float]] = {}     # version -> [first, last] time a request answered by it was sent
    sequence: list[str] = []
    failures: list[dict] = []

    def worker(offset: float) -> None:
        # --workers threads, each at rate/workers and shifted, so slow answers (a TLS handshake and a
        # database check per request on a busy machine) do not lower the total rate.
        period = args.workers / args.rate
        next_at = started + offset
        while not stop.is_set():
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sent = time.monotonic() - started
            try:
                status, version = one(args.url, args.connect, ctx, args.timeout)
                error = None if 200 <= status < 300 else f"HTTP {status}"
            except (OSError, http.client.HTTPException) as exc:
                version, error = None, f"{type(exc).__name__}: {exc}"
            with lock:
                state["total"] += 1
                if error:
                    state["failed"] += 1
                    if len(failures) < 20:
                        failures.append({"t": round(sent, 3), "error": error})
                else:
                    key = version or "(none)"
                    versions[key] = versions.get(key, 0) + 1
                    span = seen.setdefault(key, [sent, sent])
                    span[0], span[1] = min(span[0], sent), max(span[1], sent)
                    if not sequence or sequence[-1] != key:
                        sequence.append(key)
            next_at = max(next_at + period, time.monotonic() - period)   # behind: no burst to catch up

    threads = [threading.Thread(target=worker, args=(i / args.rate,), daemon=True) for i in range(args.workers)]
    for th in threads:
        th.start()
    stop_seen = None
    while True:
        now = time.monotonic()
        if now - started > args.max_seconds:
            break
        if stop_seen is None and os.path.exists(args.stop_file):
            stop_seen = now
        if stop_seen is not None and now - stop_seen > 1.0:
            break
        time.sleep(0.05)
    stop.set()
    for th in threads:
        th.join(args.timeout + 1)
    total, failed = state["total"], state["failed"]
    elapsed = time.monotonic() - started
    summary = {"requests": total, "failed": failed, "seconds": round(elapsed, 1),
               "rate": round(total / elapsed, 1) if elapsed else 0.0, "versions": versions,
               "seen": {k: [round(a, 2), round(b, 2)] for k, (a, b) in seen.items()}, "sequence": sequence,
               "failures": failures}
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(summary, fh)
    print(json.dumps(summary), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
