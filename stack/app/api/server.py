"""Tiny JSON API of the default stack (stdlib http.server + psycopg2).

GET /         service info and a live database check (JSON)
GET /healthz  liveness: the process answers (JSON)
GET /readyz   readiness: the database answers with the application role (JSON, 503 when not)
GET /metrics  Prometheus text format
GET /items    the notes stored in the database (JSON); POST /items {"note": "..."} stores one (201)

Every response carries X-Hyhome-Version: the release (HYHOME_APP_VERSION, set from the image tag or
the version playbooks/rollout.yml pins), so a client sees which version answered.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(os.environ.get("API_PORT", "8000"))
VERSION = os.environ.get("HYHOME_APP_VERSION", "unknown")
_lock = threading.Lock()
_requests: dict[str, int] = {}
_db_up = 0


def _password() -> str:
    path = os.environ.get("APP_DB_PASSWORD_FILE", "/run/secrets/app_db_password")
    with open(path, encoding="utf-8") as fh:
        return fh.readline().rstrip("\r\n")


def _connect():
    import psycopg2

    return psycopg2.connect(host=os.environ.get("APP_DB_HOST", "postgres"), dbname=os.environ["APP_DB_NAME"],
                            user=os.environ["APP_DB_USER"], password=_password(), connect_timeout=2)


def db_check() -> dict:
    """Connect as the application role and run one query; never raises."""
    global _db_up
    started = time.monotonic()
    try:
        conn = _connect()
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


ITEMS_TABLE = ("CREATE TABLE IF NOT EXISTS items (id bigserial PRIMARY KEY, note text NOT NULL, "
               "created timestamptz NOT NULL DEFAULT now())")


def items(note: str | None = None) -> dict:
    """Store ``note`` (when given) and return every row, as the application role; raises on errors."""
    conn = _connect()
    try:
        with conn, conn.cursor() as cur:
            cur.execute(ITEMS_TABLE)
            new_id = None
            if note is not None:
                cur.execute("INSERT INTO items (note) VALUES (%s) RETURNING id", (note,))
                new_id = cur.fetchone()[0]
            cur.execute("SELECT id, note FROM items ORDER BY id")
            rows = [{"id": i, "note": n} for i, n in cur.fetchall()]
        return {"id": new_id, "items": rows} if note is not None else {"items": rows}
    finally:
        conn.close()


class Handler(BaseHTTPRequestHandler):
    server_version = "hyhome-api"
    sys_version = ""

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Hyhome-Version", VERSION)
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
        elif path == "/items":
            self._items(None)
        else:
            self._json(404, {"error": "not found"})

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] != "/items":
            self._json(404, {"error": "not found"})
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
            note = json.loads(self.rfile.read(min(length, 65536)) or b"{}").get("note")
        except (ValueError, AttributeError):
            note = None
        if not isinstance(note, str) or not note:
            self._json(400, {"error": 'expected a JSON body {"note": "..."}'})
            return
        self._items(note)

    def _items(self, note: str | None) -> None:
        try:
            self._json(200 if note is None else 201, items(note))
        except Exception as exc:  # the database is down or refuses: say so, never crash
            self._json(503, {"error": type(exc).__name__})

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
