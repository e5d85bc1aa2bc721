"""Crash safety of a real `edge-node serve`: no acknowledged ticket is ever lost.

The server runs as a subprocess on a real SQLCipher database. Eight clients
issue tickets; the server is killed with SIGKILL at a random moment, started
again on the same data directory, and the database is checked: every ticket
that got a 2xx is there (with its outbox record), the outbox seq has no gap,
and `PRAGMA integrity_check` is ok. SIGTERM must stop the server cleanly.
Set CRASH_SEED to replay a run.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
import requests

from edge_node.bootstrap import DEMO_PASSWORD_SUFFIX
from edge_node.domain import audit
from edge_node.paths import DB_FILE_NAME, KEY_FILE_NAME
from edge_node.store.db import integrity_check, open_database
from edge_node.store.keyfile import load_key_file
from tests.helpers import console_script, exited, health, wait_for

EDGE_NODE = console_script("edge-node")
CRASH_ROUNDS = 20
CLIENTS = 8
KILL_AFTER_S = (0.2, 1.5)  # random delay between starting the load and kill -9
SIGTERM_AFTER_S = 0.5
SIGTERM_EXIT_S = 5.0  # a clean stop must take less than this
HEALTH_TIMEOUT_S = 30.0
REQUEST_TIMEOUT_S = 30.0
CLIENT_JOIN_S = 40.0
VISIT = {"services": ["nadra_snic_renewal"]}
PASSWORD = "reception" + DEMO_PASSWORD_SUFFIX  # the demo account made by `init --demo`


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env() -> dict[str, str]:
    """The environment without EDGE_NODE_* settings that could change the node under test."""
    return {k: v for k, v in os.environ.items() if not k.startswith("EDGE_NODE_")}


class NodeServer:
    """`edge-node serve` as a subprocess; a fresh port on every start."""

    def __init__(self, data_dir: Path) -> None:
        """Nothing runs until `start`."""
        self.data_dir = data_dir
        self.log_path = data_dir.parent / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """Base URL of the running server."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> dict[str, Any]:
        """Start the server and wait until /api/health answers; returns the health body."""
        assert self.proc is None, "server already running"
        self.port = free_port()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [EDGE_NODE, "--data-dir", str(self.data_dir), "serve", "--port", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, env=clean_env())
        return wait_for_health(self.url, self.proc, self.log_path)

    def kill(self) -> None:
        """kill -9, as a power cut or OOM kill would."""
        proc = self._take()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def terminate(self) -> tuple[int | None, float]:
        """SIGTERM; (exit code or None if still running after SIGTERM_EXIT_S, seconds taken)."""
        proc = self._take()
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code: int | None = proc.wait(timeout=SIGTERM_EXIT_S)
        except subprocess.TimeoutExpired:
            code = None
            proc.kill()
            proc.wait(timeout=10)
        return code, time.monotonic() - started

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's log, for failure messages."""
        return log_tail(self.log_path, lines)

    def _take(self) -> subprocess.Popen[bytes]:
        """The running process, forgetting it (it is about to stop)."""
        assert self.proc is not None, "server not running"
        proc, self.proc = self.proc, None
        return proc

    def __enter__(self) -> NodeServer:
        """Use as a context manager so no server outlives its test."""
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Kill the server if it is still running (a failed test leaves no orphan)."""
        if self.proc is not None:
            self.kill()


def log_tail(path: Path, lines: int) -> str:
    """Last `lines` lines of a text file ('' if missing)."""
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def wait_for_health(url: str, proc: subprocess.Popen[bytes], log_path: Path,
                    timeout: float = HEALTH_TIMEOUT_S) -> dict[str, Any]:
    """Poll GET /api/health until it answers 200; fail early if the process exits."""
    return wait_for(lambda: health(url), timeout, f"an answer from {url}/api/health",
                    stop=exited(proc, "the server"), detail=lambda: log_tail(log_path, 30))


def login(url: str) -> str:
    """Bearer token of the demo receptionist."""
    resp = requests.post(url + "/api/auth/login", timeout=REQUEST_TIMEOUT_S,
                         json={"username": "reception", "password": PASSWORD})
    assert resp.status_code == 200, resp.text
    token: str = resp.json()["token"]
    return token


class TicketLoad:
    """Client threads issuing tickets as fast as they can, recording every 2xx ticket id."""

    def __init__(self, url: str, token: str, clients: int = CLIENTS) -> None:
        """Start `clients` threads, each with its own keep-alive session."""
        self.url, self.token = url, token
        self.acked: list[str] = []
        self.bad_answers: list[str] = []  # HTTP answers other than 2xx: a server bug
        self.connection_errors = 0  # expected once the server dies
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, daemon=True,
                                          name=f"ticket-client-{i}") for i in range(clients)]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop the clients and wait for them."""
        self._stop.set()
        for thread in self._threads:
            thread.join(CLIENT_JOIN_S)
        assert not any(t.is_alive() for t in self._threads), "a client thread hangs"

    def _client(self) -> None:
        """One client: POST /api/visits in a loop until stopped."""
        with requests.Session() as session:
            session.headers["Authorization"] = f"Bearer {self.token}"
            while not self._stop.is_set():
                try:
                    resp = session.post(self.url + "/api/visits", json=VISIT,
                                        timeout=REQUEST_TIMEOUT_S)
                except requests.RequestException:
                    with self._lock:
                        self.connection_errors += 1
                    time.sleep(0.01)
                    continue
                self._record(resp)

    def _record(self, resp: requests.Response) -> None:
        """Keep the id of an acknowledged ticket; keep any other answer as a failure."""
        with self._lock:
            if 200 <= resp.status_code < 300:
                self.acked.append(resp.json()["ticket"]["id"])
            else:
                self.bad_answers.append(f"{resp.status_code}: {resp.text[:300]}")


def check_store(data_dir: Path, acked: set[str], full: bool = False) -> dict[str, int]:
    """Assert the database holds every acknowledged ticket and a sound outbox; return counts.

    Uses its own read-only connection, so it works with the server running or stopped.
    """
    db = open_database(data_dir / DB_FILE_NAME, load_key_file(data_dir / KEY_FILE_NAME))
    try:
        db.execute("PRAGMA query_only = ON")
        assert integrity_check(db) == "ok"
        tickets = {row[0] for row in db.execute("SELECT id FROM tickets")}
        missing = acked - tickets
        assert not missing, f"{len(missing)} acknowledged tickets lost, e.g. {sorted(missing)[:3]}"
        captured = {row[0] for row in db.execute(
            "SELECT pk FROM sync_outbox WHERE tbl = 'tickets' AND op = 'insert'")}
        assert captured == tickets, "tickets and their outbox records differ"
        count, first, last = db.execute(
            "SELECT count(*), min(seq), max(seq) FROM sync_outbox").fetchone()
        assert last - first + 1 == count, f"outbox seq has gaps: {first}..{last}, {count} rows"
        duplicates = db.execute(
            "SELECT queue_code, business_date, daily_number FROM tickets "
            "GROUP BY 1, 2, 3 HAVING count(*) > 1").fetchall()
        assert not duplicates, f"ticket numbers issued twice: {duplicates[:3]}"
        if full:
            assert audit.verify(db) == []
        return {"tickets": len(tickets), "outbox": count}
    finally:
        db.close()


@pytest.fixture(scope="module")
def initialised_node(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory made once by `edge-node init --demo` (Argon2 makes it slowish)."""
    data_dir = tmp_path_factory.mktemp("crash-template") / "node"
    result = subprocess.run(
        [EDGE_NODE, "--data-dir", str(data_dir), "init", "--center-id", "ISB-01", "--demo"],
        capture_output=True, text=True, env=clean_env(), timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return data_dir


@pytest.fixture
def data_dir(initialised_node: Path, tmp_path: Path) -> Path:
    """A private copy of the initialised node."""
    target = tmp_path / "node"
    shutil.copytree(initialised_node, target)
    return target


@pytest.fixture
def server(data_dir: Path) -> Iterator[NodeServer]:
    """A stopped server over `data_dir`; killed at teardown if a test leaves it running."""
    with NodeServer(data_dir) as srv:
        yield srv


def ticket_status(server: NodeServer, token: str, ticket_id: str) -> int:
    """Status of GET /api/tickets/<id> with `token`."""
    return requests.get(f"{server.url}/api/tickets/{ticket_id}", timeout=REQUEST_TIMEOUT_S,
                        headers={"Authorization": f"Bearer {token}"}).status_code


@pytest.mark.slow
def test_kill_9_under_load_loses_no_acknowledged_ticket(
        server: NodeServer, data_dir: Path, record_property: Any) -> None:
    """Twenty rounds of load + kill -9 + restart on one data directory, checked after each."""
    seed = int(os.environ.get("CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    record_property("crash_seed", seed)
    acked: set[str] = set()
    server.start()
    token = login(server.url)
    for round_no in range(CRASH_ROUNDS):
        context = f"seed {seed}, round {round_no}"
        load = TicketLoad(server.url, token)
        try:
            time.sleep(rng.uniform(*KILL_AFTER_S))
            server.kill()
        finally:
            load.stop()
        assert not load.bad_answers, f"{context}: {load.bad_answers[:3]}"
        acked.update(load.acked)
        health = server.start()
        assert health["ok"], context
        if load.acked:  # the session survives the crash: it lives in the database
            assert ticket_status(server, token, load.acked[-1]) == 200, context
        counts = check_store(data_dir, acked, full=round_no == CRASH_ROUNDS - 1)
        assert health["outbox"]["count"] == counts["outbox"], context
    server.terminate()
    record_property("acknowledged_tickets", len(acked))
    assert len(acked) >= CRASH_ROUNDS, "too few tickets were issued to test anything"


def test_sigterm_stops_cleanly_under_load(server: NodeServer, data_dir: Path) -> None:
    """SIGTERM while clients write: exit code 0, quickly, every acknowledged ticket kept."""
    server.start()
    token = login(server.url)
    load = TicketLoad(server.url, token)
    try:
        time.sleep(SIGTERM_AFTER_S)
        code, took = server.terminate()
    finally:
        load.stop()
    assert code == 0, f"exit code {code} after {took:.1f} s:\n{server.log_tail()}"
    assert took < SIGTERM_EXIT_S
    assert "stopped" in server.log_tail(5)
    assert not load.bad_answers, load.bad_answers[:3]
    assert load.acked, "no ticket was issued before SIGTERM"
    check_store(data_dir, set(load.acked), full=True)
