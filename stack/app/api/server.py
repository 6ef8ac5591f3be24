"""Tiny JSON API of the default stack (stdlib http.server + psycopg2).

GET /         service info and a live database check (JSON)
GET /healthz  liveness: the process answers (JSON)
GET /readyz   readiness: the database answers with the application role (JSON, 503 when not)
GET /metrics  Prometheus text format
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(os.environ.get("API_PORT", "8000"))
VERSION = os.environ.get("API_VERSION", "1")
_lock = threading.Lock()
_requests: dict[str, int] = {}
_db_up = 0


def _password() -> str:
    path = os.environ.get("APP_DB_PASSWORD_FILE", "/run/secrets/app_db_password")
    with open(path, encoding="utf-8") as fh:
        return fh.readline().rstrip("\r\n")


def db_check() -> dict:
    """Connect as the application role and run one query; never raises."""
    global _db_up
    import psycopg2

    started = time.monotonic()
    try:
        conn = psycopg2.connect(
            host=os.environ.get("APP_DB_HOST", "postgres"),
            dbname=os.environ["APP_DB_NAME"],
            user=os.environ["APP_DB_USER"],
            password=_password(),
            connect_timeout=2,
        )
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT current_user, current_database()")
                user, database = cur.fetchone()
        finally:
            conn.close()
        _db_up = 1
        return {"ok": True, "user": user, "database": database,
                "latency_ms": round((time.monotonic() - started) * 1000, 1)}
    except Exception as exc:  # the check reports, it never crashes the server
        _db_up = 0
        return {"ok": False, "error": type(exc).__name__}


class Handler(BaseHTTPRequestHandler):
    server_version = "hyhome-api"
    sys_version = ""

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: dict) -> None:
        self._send(status, json.dumps(payload).encode() + b"\n")

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        label = path if path in ("/", "/healthz", "/readyz", "/metrics") else "other"
        with _lock:
            _requests[label] = _requests.get(label, 0) + 1
        if path == "/healthz":
            self._json(200, {"status": "ok"})
        elif path == "/readyz":
            db = db_check()
            self._json(200 if db["ok"] else 503, {"status": "ok" if db["ok"] else "unavailable", "db": db})
        elif path == "/":
            db = db_check()
            self._json(200, {"service": "api", "version": VERSION, "host": os.uname().nodename, "db": db})
        elif path == "/metrics":
            with _lock:
                lines = ["# HELP hyhome_api_requests_total Requests served, by path.",
                         "# TYPE hyhome_api_requests_total counter"]
                lines += [f'hyhome_api_requests_total{{path="{p}"}} {n}' for p, n in sorted(_requests.items())]
            lines += ["# HELP hyhome_api_db_up Result of the last database check (1 = ok).",
                      "# TYPE hyhome_api_db_up gauge", f"hyhome_api_db_up {_db_up}"]
            self._send(200, ("\n".join(lines) + "\n").encode(), "text/plain; version=0.0.4")
        else:
            self._json(404, {"error": "not found"})

    def log_message(self, fmt: str, *args) -> None:
        if not self.path.startswith(("/healthz", "/readyz", "/metrics")):
            sys.stderr.write(f"{self.address_string()} {fmt % args}\n")


def main() -> int:
    server = ThreadingHTTPServer(("0.0.0.0", PORT), Handler)  # noqa: S104 - container port, internal network
    server.daemon_threads = True
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
