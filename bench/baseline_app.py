"""The baseline of the ticket benchmark: a bare Flask app that inserts one row per request.

Same durability as the node (WAL, synchronous=FULL, a commit per request before
the answer), same server (waitress, same thread count), none of the node's
work: no auth, no encryption, no outbox, no audit, no group commit. Writes go
through one connection under a lock, the fastest simple correct way to share a
SQLite file between threads (per-thread connections would contend on the
write lock and sleep in SQLite's busy handler).

Run: python -m bench.baseline_app --db /tmp/base.db --port 8090 --threads 16
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import Flask, jsonify, request
from waitress.server import create_server

SCHEMA = """
CREATE TABLE IF NOT EXISTS tickets (
    id TEXT PRIMARY KEY,
    services TEXT NOT NULL,
    issued_at TEXT NOT NULL
)
"""


def connect(path: Path) -> sqlite3.Connection:
    """A plain SQLite connection with the node's durability pragmas."""
    conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute(SCHEMA)
    return conn


def create_app(path: Path) -> Flask:
    """The app: POST /api/visits inserts one ticket row; GET /api/health answers ok."""
    app = Flask("baseline")
    conn = connect(path)
    lock = threading.Lock()

    @app.post("/api/visits")
    def issue() -> tuple[Any, int]:
        """Insert one row and commit it before answering."""
        body = request.get_json(force=True)
        ticket = {"id": str(uuid.uuid4()), "services": body["services"],
                  "issued_at": datetime.now(UTC).isoformat()}
        with lock:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO tickets (id, services, issued_at) VALUES (?, ?, ?)",
                         (ticket["id"], json.dumps(ticket["services"]), ticket["issued_at"]))
            conn.execute("COMMIT")
        return jsonify({"ticket": ticket}), 201

    @app.get("/api/health")
    def health() -> Any:
        """Liveness, for the harness."""
        return jsonify({"ok": True})

    return app


def main(argv: list[str] | None = None) -> None:
    """Serve the baseline app under waitress until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True, help="SQLite file to write.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=16, help="waitress worker threads")
    args = parser.parse_args(argv)
    server = create_server(create_app(args.db), host=args.host, port=args.port,
                           threads=args.threads, ident="baseline")
    server.run()


if __name__ == "__main__":
    main()
