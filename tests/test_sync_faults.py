"""Sync under faults: real processes, a real TLS Mosquitto (DESIGN.md Guarantees 2-4).

1. kill -9 of `edge-node serve` (with its sync agent) mid-sync, 20 times on one data dir;
2. kill -9 of `edge-hq serve` mid-batch, 20 times, while the node keeps sending;
3. broker restarts (SIGTERM and kill -9) while a backlog of thousands of records streams;
4. two HQ processes on the shared subscription, one killed -9 mid-stream; the survivor
   must finish alone (SQLite and PostgreSQL stores);
5. captured batch envelopes replayed, duplicated and shuffled, by a raw client with the
   node's certificate, to a fresh HQ and again to one that has them all (both stores).

After each: every ticket answered 2xx is at HQ, nothing is doubled (HQ count = node count,
HQ's ack = node's last seq, no stray `hq_seen` rows, nothing quarantined, audit chain
intact), HQ's rows equal the node's, and the node's backlog is zero. Scenarios 2-5 run the
node in-process so the agent's ACK timeout can be short and its batches small; 1 keeps the
real settings. Scenario 5 runs the HQ worker in-process too, to count every application.
Set SYNC_FAULTS_SEED to replay a run (each test prints the seed it used).
"""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import requests
from flask import Flask
from paho.mqtt.enums import CallbackAPIVersion
from sqlite_utils import Database

import hq.ingest as ingest_module
import sync.agent as agent_module
from edge_node import __version__
from edge_node.api import create_app
from edge_node.bootstrap import DEMO_PASSWORD_SUFFIX
from edge_node.config import Settings
from edge_node.node import Node
from edge_node.paths import DB_FILE_NAME, KEY_FILE_NAME
from edge_node.replication.port import NodeOutbox
from edge_node.store import meta
from edge_node.store.db import open_database
from edge_node.store.keyfile import load_key_file
from edge_node.store.schema import SYNCED_TABLES
from hq.chain import verify_chain
from hq.store import HQDatabase
from hq.worker import Worker
from sync import envelope, topics
from sync.agent import Agent
from tests.helpers import console_script, exited, health, wait_for
from tests.hq_fixtures import postgres_url_with_schema
from tests.sync_env import SyncEnv, hq_rows
from tests.tls_broker import TLSBroker, free_port

pytestmark = pytest.mark.broker  # every test here starts a TLS Mosquitto

EDGE_NODE = console_script("edge-node")
EDGE_HQ = console_script("edge-hq")
NODE_KILL_TRIALS = 20
HQ_KILL_TRIALS = 20
BROKER_RESTARTS = ("term", "kill", "term", "kill", "term")
FAST_ACK_TIMEOUT_S = 2.0  # in-process agents only; `edge-node serve` keeps the real one
SMALL_BATCH_RECORDS = 200  # likewise
BACKLOG_TICKETS = 300  # 5 outbox records each
TOPUP_TICKETS = 200  # issued while the broker is down
HEALTH_TIMEOUT_S = 30.0
EXIT_TIMEOUT_S = 20.0
REQUEST_TIMEOUT_S = 10.0
PROGRESS_TIMEOUT_S = 45.0
CONVERGE_TIMEOUT_S = 120.0
SURVIVOR_TIMEOUT_S = 40.0  # one live worker catches up in seconds; a stall never does
ACK_WAIT_S = 60.0
VISIT = {"services": ["nadra_snic_renewal"]}
PASSWORD = "reception" + DEMO_PASSWORD_SUFFIX
READY_LINE = "ingest worker(s) connected"  # edge-hq serve prints it once its handlers are set

Post = Callable[[], tuple[int, Any]]


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture
def seed(request: pytest.FixtureRequest, record_property: Any) -> int:
    """The run's random seed: SYNC_FAULTS_SEED, or a fresh one, printed for replays."""
    value = int(os.environ.get("SYNC_FAULTS_SEED") or random.randrange(1 << 30))
    print(f"{request.node.name}: SYNC_FAULTS_SEED={value}")
    record_property("sync_faults_seed", value)
    return value


@pytest.fixture
def hq_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """HQ store URL: SQLite unless parametrized (indirectly) with "postgresql"."""
    if getattr(request, "param", "sqlite") == "sqlite":
        yield str(tmp_path / "hq.db")
    else:
        yield from postgres_url_with_schema()


@pytest.fixture
def env(tmp_path: Path, hq_store: str) -> Iterator[SyncEnv]:
    """Broker (not started), HQ keys and store; the broker is stopped afterwards."""
    broker = TLSBroker(tmp_path / "broker")
    try:
        yield SyncEnv(tmp_path, broker, hq_store)
    finally:
        broker.stop(kill=True)


@pytest.fixture
def fast_acks(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process agents give up on a missing ack quickly and stream in small batches.

    HQ and broker deaths lose PUBACKed batches, which only the ACK timeout recovers; small
    batches make a backlog of thousands a stream of many envelopes, not one or two.
    """
    monkeypatch.setattr(agent_module, "ACK_TIMEOUT_S", FAST_ACK_TIMEOUT_S)
    monkeypatch.setattr(agent_module, "BATCH_MAX_RECORDS", SMALL_BATCH_RECORDS)


# -- subprocesses ------------------------------------------------------------------------------
def once(fn: Callable[[], Any]) -> Callable[[], None]:
    """`fn` made safe to call again (a test body stops something early, its finally again)."""
    done: list[bool] = []

    def call() -> None:
        if not done:
            done.append(True)
            fn()

    return call


def child_env() -> dict[str, str]:
    """Our environment without EDGE_NODE_*/EDGE_HQ_* settings that could change the child,
    except the PII field key a PostgreSQL HQ store needs (tests/hq_fixtures.py)."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("EDGE_NODE_", "EDGE_HQ_")) or k == "EDGE_HQ_PII_KEY"}


def log_tail(path: Path, lines: int = 40) -> str:
    """The end of a log file, for failure messages."""
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class Child:
    """One subprocess at a time under our control; `cleanup` kills whatever still runs."""

    def __init__(self, name: str, log_path: Path) -> None:
        """Nothing runs until `spawn`."""
        self.name, self.log_path = name, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(self, args: list[str]) -> None:
        """Start `args`, appending its output to the log."""
        assert self.proc is None, f"{self.name} already running"
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.name} ---\n".encode())
            log.flush()
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                         env=child_env())

    def running(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """kill -9, as a power cut or the OOM killer would."""
        proc, self.proc = self.proc, None
        assert proc is not None, f"{self.name} not running"
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(EXIT_TIMEOUT_S)

    def terminate(self) -> int | None:
        """SIGTERM; the exit code, or None when it had to be killed after EXIT_TIMEOUT_S."""
        proc, self.proc = self.proc, None
        assert proc is not None, f"{self.name} not running"
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(EXIT_TIMEOUT_S)
            return None

    def cleanup(self) -> None:
        """Kill the process if it still runs (a failing test leaves no orphan)."""
        if self.proc is not None:
            self.kill()

    def log_tail(self) -> str:
        """The end of the log."""
        return log_tail(self.log_path)


class NodeServer(Child):
    """`edge-node serve` over a data directory; its agent starts since the node is enrolled."""

    def __init__(self, data_dir: Path, log_path: Path) -> None:
        """A fresh port on every start."""
        super().__init__("edge-node serve", log_path)
        self.data_dir = data_dir
        self.port = 0

    @property
    def url(self) -> str:
        """Base URL of the running server."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> None:
        """Start the server; with `wait`, until /api/health answers."""
        self.port = free_port()
        self.spawn([EDGE_NODE, "--data-dir", str(self.data_dir), "serve", "--port",
                    str(self.port)])
        if wait:
            self.wait_healthy()

    def wait_healthy(self) -> None:
        """Poll /api/health; fail early, with the log, if the process exits."""
        assert self.proc is not None
        wait_for(lambda: health(self.url), HEALTH_TIMEOUT_S, "edge-node to become healthy",
                 stop=exited(self.proc, "edge-node"), detail=self.log_tail)


class HQProcess(Child):
    """`edge-hq --db URL serve` with `workers` ingest workers named `<worker_id>-<n>`."""

    def __init__(self, env: SyncEnv, log_path: Path, worker_id: str = "hq",
                 workers: int = 1) -> None:
        """Nothing runs until `start`."""
        super().__init__(f"edge-hq {worker_id}", log_path)
        self.args = [EDGE_HQ, "--db", env.hq_url, "serve", "--keys", str(env.hq_dir),
                     "--broker", f"localhost:{env.broker.hq_port}", "--workers", str(workers),
                     "--worker-id", worker_id]

    def start(self, wait: bool = True) -> None:
        """Start the workers; with `wait`, until they are up (SIGTERM then stops them cleanly)."""
        ready = self.log_text().count(READY_LINE)
        self.spawn(self.args)
        if wait:
            wait_for(lambda: self.log_text().count(READY_LINE) > ready or not self.running(),
                     HEALTH_TIMEOUT_S, f"{self.name} to start")
            assert self.running(), f"{self.name} exited:\n{self.log_tail()}"

    def log_text(self) -> str:
        """The whole log so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


# -- tickets -----------------------------------------------------------------------------------
def ticket_id(body: Any) -> str:
    """The ticket id of a 2xx answer to POST /api/visits."""
    return str(body["ticket"]["id"])


class TicketLoad:
    """Client threads issuing tickets; keeps the id of every ticket answered 2xx.

    `key` picks what to keep from a 2xx body (other creations reuse the load that way).
    """

    def __init__(self, opener: Callable[[], AbstractContextManager[Post]], clients: int = 1,
                 pause_s: float = 0.1, key: Callable[[Any], str] = ticket_id) -> None:
        """Start `clients` threads, each posting a visit every `pause_s` seconds."""
        self.acked: list[str] = []
        self._key = key
        self.bad_answers: list[str] = []  # non-2xx HTTP answers: a server bug
        self.connection_errors = 0  # expected while the server is dead
        self._opener, self._pause_s = opener, pause_s
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, daemon=True,
                                          name=f"tickets-{i}") for i in range(clients)]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop the clients and wait for them (never raises: safe in a finally block)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(REQUEST_TIMEOUT_S + 5)

    def finish(self) -> list[str]:
        """Stop, check every answer was a 2xx or a dead connection; the acknowledged ids."""
        self.stop()
        assert not any(t.is_alive() for t in self._threads), "a ticket client hangs"
        assert not self.bad_answers, self.bad_answers[:3]
        return self.acked

    def _client(self) -> None:
        """Post until stopped; a connection error is counted, not fatal."""
        with self._opener() as post:
            while not self._stop.is_set():
                try:
                    status, body = post()
                except (requests.RequestException, OSError):
                    with self._lock:
                        self.connection_errors += 1
                    self._stop.wait(0.05)
                    continue
                with self._lock:
                    if 200 <= status < 300:
                        self.acked.append(self._key(body))
                    else:
                        self.bad_answers.append(f"{status}: {str(body)[:300]}")
                self._stop.wait(self._pause_s)


def http_login(url: str) -> str:
    """Bearer token of the demo receptionist (sessions live in the DB: they survive kill -9)."""
    resp = requests.post(url + "/api/auth/login", timeout=REQUEST_TIMEOUT_S,
                         json={"username": "reception", "password": PASSWORD})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["token"])


@contextmanager
def http_poster(url: str, token: str) -> Iterator[Post]:
    """POST /api/visits over HTTP with a keep-alive session."""
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {token}"

        def post() -> tuple[int, Any]:
            resp = session.post(url + "/api/visits", json=VISIT, timeout=REQUEST_TIMEOUT_S)
            return resp.status_code, resp.json() if resp.ok else resp.text

        yield post


def app_login(app: Flask) -> str:
    """Bearer token of the demo receptionist, through the in-process app."""
    resp = app.test_client().post("/api/auth/login",
                                  json={"username": "reception", "password": PASSWORD})
    assert resp.status_code == 200, resp.get_json()
    return str(resp.get_json()["token"])


@contextmanager
def app_poster(app: Flask, token: str) -> Iterator[Post]:
    """POST /api/visits through the in-process app (the same route and writer as HTTP)."""
    client = app.test_client()

    def post() -> tuple[int, Any]:
        resp = client.post("/api/visits", json=VISIT,
                           headers={"Authorization": f"Bearer {token}"})
        return resp.status_code, resp.get_json()

    yield post


def issue_now(app: Flask, token: str, count: int) -> list[str]:
    """Issue `count` tickets one after another; their ids (each must get a 201)."""
    ids = []
    with app_poster(app, token) as post:
        for _ in range(count):
            status, body = post()
            assert status == 201, body
            ids.append(body["ticket"]["id"])
    return ids


# -- node and HQ state -------------------------------------------------------------------------
@contextmanager
def node_db(data_dir: Path) -> Iterator[Database]:
    """A read-only connection to a node's database (works with its server running or not)."""
    db = open_database(data_dir / DB_FILE_NAME, load_key_file(data_dir / KEY_FILE_NAME))
    try:
        db.execute("PRAGMA query_only = ON")
        yield db
    finally:
        db.close()


def outbox_position(db: Database) -> tuple[int, int, int]:
    """(seq acked by HQ, last seq ever written, records not yet acked)."""
    acked = meta.get_int(db, meta.ACKED_KEY)
    row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'sync_outbox'").fetchone()
    last = int(row[0]) if row else 0
    backlog = db.execute("SELECT count(*) FROM sync_outbox WHERE seq > ?", [acked]).fetchone()[0]
    return acked, last, backlog


def node_backlog(data_dir: Path) -> int:
    """Records the node still waits to have acknowledged."""
    with node_db(data_dir) as db:
        return outbox_position(db)[2]


def hq_acked(view: HQDatabase, node_id: str) -> int:
    """HQ's cumulative ack for the node."""
    return int(view.execute("SELECT acked_seq FROM hq_nodes WHERE node_id = ?",
                            [node_id]).fetchone()[0])


def assert_converged(db: Database, hq_url: str, node_id: str, acked_tickets: set[str],
                     context: str) -> dict[str, int]:
    """Nothing lost, nothing doubled, HQ equals the node, backlog zero; returns table counts."""
    acked, last, backlog = outbox_position(db)
    assert backlog == 0 and acked == last, f"{context}: node backlog {backlog}, acked " \
        f"{acked} of {last}"
    hq = HQDatabase(hq_url)
    try:
        assert hq_acked(hq, node_id) == last, f"{context}: HQ ack differs from the node's"
        stray = hq.execute("SELECT count(*) FROM hq_seen WHERE node_id = ?", [node_id])
        assert stray.fetchone()[0] == 0, f"{context}: hq_seen rows beyond the ack"
        quarantined = hq.execute("SELECT reason, detail FROM hq_quarantine").fetchall()
        assert not quarantined, f"{context}: quarantined {quarantined[:3]}"
        assert verify_chain(hq, node_id) == [], context
    finally:
        hq.close()
    counts = {}
    for table in SYNCED_TABLES:
        mine = {r["id"]: r for r in db.query(f"SELECT * FROM {table}")}
        theirs = hq_rows(hq_url, table)
        assert len(theirs) == len(mine), f"{context}: {table}: HQ has {len(theirs)} rows, " \
            f"the node {len(mine)}"
        assert set(theirs) == set(mine), f"{context}: {table} keys differ"
        differing = [pk for pk, row in mine.items() if theirs[pk] != row]
        assert not differing, f"{context}: {table} rows differ, e.g. {differing[:3]}"
        counts[table] = len(mine)
    missing = acked_tickets - set(hq_rows(hq_url, "tickets"))
    assert not missing, f"{context}: {len(missing)} acknowledged tickets not at HQ"
    return counts


def node_id_of(data_dir: Path) -> str:
    """The node id recorded at init."""
    with node_db(data_dir) as db:
        return str(db.execute("SELECT value FROM node_meta WHERE key = 'node_id'")
                   .fetchone()[0])


def wait_until_synced(backlog: Callable[[], int], context: str) -> None:
    """Wait for a zero backlog."""
    wait_for(lambda: backlog() == 0, CONVERGE_TIMEOUT_S, f"backlog to reach zero ({context})")


def wait_progress(acked: Callable[[], int], context: str) -> None:
    """Wait until the ack moves past its current value."""
    start = acked()
    wait_for(lambda: acked() > start, PROGRESS_TIMEOUT_S, f"sync progress ({context})")


def wait_part_synced(port: NodeOutbox, rng: random.Random, context: str) -> None:
    """Return at a random point of the stream: once a random share of the backlog is acked."""
    target = port.stats()["count"] * rng.uniform(0.2, 0.9)
    wait_for(lambda: port.stats()["count"] <= target, PROGRESS_TIMEOUT_S,
             f"sync progress ({context})", interval=0.005)


# -- 1. the node dies ---------------------------------------------------------------------------
@pytest.mark.slow
def test_node_kill_9_mid_sync(tmp_path: Path, env: SyncEnv, settings: Settings,
                              seed: int, record_property: Any) -> None:
    """`edge-node serve` killed -9 at random moments while it issues tickets and syncs."""
    rng = random.Random(seed)
    data_dir = Path(settings["data_dir"])
    node_id = node_id_of(data_dir)
    env.enroll(node_id, data_dir / "sync")
    env.broker.start()
    server = NodeServer(data_dir, tmp_path / "node.log")
    hq = HQProcess(env, tmp_path / "hq.log")
    acked: set[str] = set()
    token, mid_sync = "", 0
    with ExitStack() as cleanup:
        cleanup.callback(hq.cleanup)
        cleanup.callback(server.cleanup)
        hq.start()
        for _ in range(NODE_KILL_TRIALS):
            if token and rng.random() < 0.2:  # die while starting, connecting, resending
                server.start(wait=False)
                time.sleep(rng.uniform(0.2, 2.5))
                server.kill()
            else:
                server.start()
                token = token or http_login(server.url)
                load = TicketLoad(partial(http_poster, server.url, token), clients=2,
                                  pause_s=0.1)
                try:
                    time.sleep(rng.uniform(0.1, 2.0))
                    server.kill()
                finally:
                    load.stop()
                acked.update(load.finish())
            mid_sync += node_backlog(data_dir) > 0
        server.start()
        wait_until_synced(lambda: node_backlog(data_dir), f"seed {seed}")
        assert server.terminate() == 0, server.log_tail()
        assert hq.terminate() == 0, hq.log_tail()
    with node_db(data_dir) as db:
        assert_converged(db, env.hq_url, node_id, acked, f"seed {seed}")
    record_property("acknowledged_tickets", len(acked))
    record_property("killed_with_backlog", mid_sync)
    assert len(acked) >= 50, "too few tickets to test anything"
    assert mid_sync >= NODE_KILL_TRIALS // 4, f"only {mid_sync} kills hit a backlog"


# -- 2. the HQ worker dies ---------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.usefixtures("fast_acks")
def test_hq_worker_kill_9_mid_batch(tmp_path: Path, env: SyncEnv, node: Node, seed: int,
                                    record_property: Any, caplog: pytest.LogCaptureFixture
                                    ) -> None:
    """`edge-hq serve` killed -9 at random moments while the node keeps sending."""
    rng = random.Random(seed)
    caplog.set_level(logging.INFO, logger="sync.agent")
    identity = env.enroll(node.node_id, Path(node.settings["data_dir"]) / "sync")
    env.broker.start()
    app = create_app(node)
    token = app_login(app)
    acked = set(issue_now(app, token, 50))  # a backlog to start with
    port = NodeOutbox(node)
    hq = HQProcess(env, tmp_path / "hq.log")
    with ExitStack() as cleanup:
        cleanup.callback(hq.cleanup)
        view = HQDatabase(env.hq_url)
        cleanup.callback(view.close)
        agent = Agent(port, identity, __version__)
        agent.start()
        cleanup.callback(agent.stop)
        load = TicketLoad(partial(app_poster, app, token), pause_s=0.1)
        cleanup.callback(load.stop)
        for trial in range(HQ_KILL_TRIALS):
            if rng.random() < 0.25:  # anywhere, start-up and connect included
                hq.start(wait=False)
                time.sleep(rng.uniform(0.1, 1.5))
            else:  # while it applies
                hq.start()
                wait_progress(lambda: hq_acked(view, node.node_id), f"seed {seed}, {trial}")
                time.sleep(rng.uniform(0.0, 0.3))
            hq.kill()
            if rng.random() < 0.5:  # HQ stays down a while; the node keeps publishing
                time.sleep(rng.uniform(0.1, 1.0))
        hq.start()
        acked.update(load.finish())
        wait_until_synced(lambda: port.stats()["count"], f"seed {seed}")
        assert hq.terminate() == 0, hq.log_tail()
    assert_converged(node.reader(), env.hq_url, node.node_id, acked, f"seed {seed}")
    resends = sum(any(says in r.getMessage() for says in ("resending", "no HQ worker"))
                  for r in caplog.records)  # an ack timeout, or a batch that reached nobody
    record_property("acknowledged_tickets", len(acked))
    record_property("node_resends", resends)
    assert resends > 0, "no HQ death ever cost the node a batch: the kills missed"


# -- 3. the broker restarts ---------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.usefixtures("fast_acks")
def test_broker_restarts_mid_stream(tmp_path: Path, env: SyncEnv, node: Node, seed: int,
                                    record_property: Any) -> None:
    """Mosquitto stopped (SIGTERM) and killed (-9) several times while thousands stream."""
    rng = random.Random(seed)
    identity = env.enroll(node.node_id, Path(node.settings["data_dir"]) / "sync")
    env.broker.start()
    app = create_app(node)
    token = app_login(app)
    acked = set(issue_now(app, token, BACKLOG_TICKETS))
    port = NodeOutbox(node)
    assert port.stats()["count"] > 1000
    hq = HQProcess(env, tmp_path / "hq.log")
    backlogs = []
    with ExitStack() as cleanup:
        cleanup.callback(hq.cleanup)
        hq.start()
        agent = Agent(port, identity, __version__)
        agent.start()
        cleanup.callback(agent.stop)
        load = TicketLoad(partial(app_poster, app, token), pause_s=0.1)
        cleanup.callback(load.stop)
        for how in rng.sample(BROKER_RESTARTS, len(BROKER_RESTARTS)):
            wait_part_synced(port, rng, f"seed {seed}, before {how}")
            backlogs.append(port.stats()["count"])
            env.broker.stop(kill=how == "kill")
            acked.update(issue_now(app, token, TOPUP_TICKETS))  # offline: the backlog grows
            env.broker.start()
        acked.update(load.finish())
        wait_until_synced(lambda: port.stats()["count"], f"seed {seed}")
        assert hq.terminate() == 0, hq.log_tail()
    assert_converged(node.reader(), env.hq_url, node.node_id, acked, f"seed {seed}")
    record_property("backlog_at_restarts", backlogs)
    assert sum(b >= 100 for b in backlogs) >= 3, f"restarts missed the stream: {backlogs}"


# -- 4. one of two HQ workers dies --------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.usefixtures("fast_acks")
@pytest.mark.parametrize("hq_store", ["sqlite", "postgresql"], indirect=True)
def test_two_hq_workers_one_killed(tmp_path: Path, env: SyncEnv, node: Node, seed: int,
                                   record_property: Any) -> None:
    """Two `edge-hq serve` processes share the subscription; one dies, the other carries on."""
    rng = random.Random(seed)
    identity = env.enroll(node.node_id, Path(node.settings["data_dir"]) / "sync")
    env.broker.start()
    app = create_app(node)
    token = app_login(app)
    acked = set(issue_now(app, token, BACKLOG_TICKETS))
    port = NodeOutbox(node)
    workers = {name: HQProcess(env, tmp_path / f"{name}.log", worker_id=name)
               for name in ("hqa", "hqb")}
    with ExitStack() as cleanup:
        for worker in workers.values():
            cleanup.callback(worker.cleanup)
            worker.start()
        agent = Agent(port, identity, __version__)
        agent.start()
        cleanup.callback(agent.stop)
        load = TicketLoad(partial(app_poster, app, token), pause_s=0.1)
        cleanup.callback(load.stop)
        wait_part_synced(port, rng, f"seed {seed}, both workers")
        victim = rng.choice(sorted(workers))
        backlog_at_kill = port.stats()["count"]
        workers[victim].kill()
        killed_at = time.monotonic()
        time.sleep(2.0)  # the node keeps issuing and sending to the survivor
        acked.update(load.finish())
        wait_for(lambda: port.stats()["count"] == 0, SURVIVOR_TIMEOUT_S,
                 f"the survivor alone to take the backlog to zero (seed {seed}, {victim} dead)")
        record_property("backlog_at_kill", backlog_at_kill)
        record_property("survivor_catch_up_s", round(time.monotonic() - killed_at, 1))
        workers[victim].start()  # back again: both share the load, then all converge
        acked.update(issue_now(app, token, 20))
        wait_until_synced(lambda: port.stats()["count"], f"seed {seed}, both again")
        for name, worker in workers.items():
            assert worker.terminate() == 0, f"{name}:\n{worker.log_tail()}"
    assert_converged(node.reader(), env.hq_url, node.node_id, acked, f"seed {seed}")
    assert backlog_at_kill > 0, "the kill missed the stream"


# -- 5. replayed and reordered publishes ---------------------------------------------------------
class RawClient:
    """A bare paho client with some certificate: publishes raw payloads, records messages."""

    def __init__(self, env: SyncEnv, client_id: str, certfile: Path, keyfile: Path,
                 subscribe: str) -> None:
        """Connect, subscribe (QoS 1) and wait for the SUBACK."""
        self.messages: list[tuple[str, bytes]] = []
        self.pubacks: dict[int, int] = {}
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv5)
        self.client.tls_set(ca_certs=str(env.broker.cafile), certfile=str(certfile),
                            keyfile=str(keyfile))
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.connect("localhost", env.broker.hq_port)
        self.client.loop_start()
        wait_for(self.client.is_connected, 10, f"{client_id} to connect")
        self.client.subscribe(subscribe, qos=1)
        assert self._subscribed.wait(10), f"{client_id}: no SUBACK"

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        """Keep every message, in arrival order."""
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        """Keep each PUBACK's reason code."""
        with self._lock:
            self.pubacks[mid] = int(getattr(reason, "value", 0))

    def received(self) -> list[tuple[str, bytes]]:
        """Messages so far, in arrival order."""
        with self._lock:
            return list(self.messages)

    def publish_all(self, topic: str, payloads: list[bytes]) -> None:
        """QoS 1 publishes, in order; every PUBACK must be a success (< 0x80)."""
        mids = [self.client.publish(topic, payload, qos=1).mid for payload in payloads]
        wait_for(lambda: len(self.pubacks) >= len(mids), ACK_WAIT_S, "PUBACKs")
        assert all(self.pubacks[mid] < 0x80 for mid in mids), "the broker refused a replay"

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


def batch_range(payload: bytes) -> tuple[int, int] | None:
    """(first, last) seq of an upstream batch envelope; None for a downstream ack."""
    header = envelope.parse(payload).header
    if header["kind"] != "batch":
        return None
    return int(header["first_seq"]), int(header["last_seq"])


def expected_acks(payloads: list[bytes], start: int) -> list[int]:
    """HQ's cumulative ack after each batch in `payloads`, from an ack of `start`."""
    seen: set[int] = set()
    acked, out = start, []
    for payload in payloads:
        span = batch_range(payload)
        if span is None:
            continue
        seen.update(range(span[0], span[1] + 1))
        while acked + 1 in seen:
            acked += 1
        out.append(acked)
    return out


def hq_snapshot(url: str) -> dict[str, list[Any]]:
    """Everything HQ derived from upstream batches, `updated_at` included (bumped per apply)."""
    db = HQDatabase(url)
    try:
        return {table: sorted(tuple(row) for row in db.execute(f"SELECT * FROM {table}"))
                for table in ("hq_records", "hq_audit", "hq_conflicts", "hq_seen")} | {
            "acks": [tuple(r) for r in db.execute("SELECT node_id, acked_seq FROM hq_nodes")]}
    finally:
        db.close()


def wipe_hq_records(url: str) -> None:
    """Forget everything HQ received (keeping the enrolled node), as a fresh store would."""
    db = HQDatabase(url)

    def run(tx: HQDatabase) -> None:
        for table in ("hq_records", "hq_audit", "hq_conflicts", "hq_seen"):
            tx.execute(f"DELETE FROM {table}")
        tx.execute("UPDATE hq_nodes SET acked_seq = 0")

    try:
        db.retrying(run)
    finally:
        db.close()


def replay(env: SyncEnv, sync_dir: Path, node_id: str, payloads: list[bytes]) -> list[int]:
    """Publish `payloads` with the node's certificate; HQ's acks for them, in order."""
    client = RawClient(env, f"{node_id}-replayer", sync_dir / "node.pem", sync_dir / "node.key",
                       topics.ack(node_id))
    hq_sign = env.hq.sign_key.public_key()
    try:
        want = len(expected_acks(payloads, 0))
        client.publish_all(topics.up(node_id), payloads)
        wait_for(lambda: len(client.received()) >= want, ACK_WAIT_S, "HQ's acks of the replay")
        time.sleep(0.3)  # a surplus ack would be a bug too: give it time to show
        acks = []
        for _, payload in client.received():
            env_ = envelope.parse(payload)
            envelope.verify(env_, hq_sign)
            acks.append(int(env_.header["acked_seq"]))
        return acks
    finally:
        client.close()


def shuffled_with_duplicates(rng: random.Random, payloads: list[bytes]) -> list[bytes]:
    """Every payload once to three times, in random order."""
    out = [p for p in payloads for _ in range(rng.randint(1, 3))]
    rng.shuffle(out)
    return out


@pytest.mark.usefixtures("fast_acks")
@pytest.mark.parametrize("hq_store", ["sqlite", "postgresql"], indirect=True)
def test_replayed_and_reordered_batches(env: SyncEnv, node: Node, seed: int,
                                        monkeypatch: pytest.MonkeyPatch,
                                        record_property: Any) -> None:
    """Captured batches replayed shuffled and duplicated: applied once each, acked right."""
    rng = random.Random(seed)
    sync_dir = Path(node.settings["data_dir"]) / "sync"
    identity = env.enroll(node.node_id, sync_dir)
    env.broker.start()
    applied: Counter[int] = Counter()
    real_apply = ingest_module.apply_record

    def counting_apply(tx: HQDatabase, node_id: str, record: dict[str, Any], now: str) -> None:
        applied[record["seq"]] += 1
        real_apply(tx, node_id, record, now)

    monkeypatch.setattr(ingest_module, "apply_record", counting_apply)
    app = create_app(node)
    token = app_login(app)
    acked = set(issue_now(app, token, 60))
    with ExitStack() as cleanup:
        admin = env.broker.identity("wiretap")
        capture = RawClient(env, "wiretap", admin.certfile, admin.keyfile,
                            f"{topics.ROOT}/node/+/up")
        cleanup.callback(capture.close)
        worker = Worker(env.hq_url, env.hq, "localhost", env.broker.hq_port)
        worker.start()
        cleanup.callback(worker.stop)
        agent = Agent(NodeOutbox(node), identity, __version__)
        agent.start()
        stop_agent = once(agent.stop)
        cleanup.callback(stop_agent)
        load = TicketLoad(partial(app_poster, app, token), pause_s=0.05)  # many small batches
        cleanup.callback(load.stop)
        time.sleep(2.0)
        acked.update(load.finish())
        wait_until_synced(lambda: NodeOutbox(node).stats()["count"], f"seed {seed}")
        stop_agent()  # from here on only the replayer publishes as the node
        time.sleep(0.3)
        captured = [payload for _, payload in capture.received()]
        record_property("captured_envelopes", len(captured))
        last = outbox_position(node.reader())[1]
        covered: set[int] = set()
        for span in filter(None, map(batch_range, captured)):
            covered.update(range(span[0], span[1] + 1))
        assert covered == set(range(1, last + 1)), "the capture missed batches"
        assert_converged(node.reader(), env.hq_url, node.node_id, acked, f"seed {seed}, live")
        assert set(applied) == covered and max(applied.values()) == 1, "live sync re-applied"

        # A fresh HQ gets the whole history shuffled and duplicated.
        wipe_hq_records(env.hq_url)
        applied.clear()
        first = shuffled_with_duplicates(rng, captured)
        acks = replay(env, sync_dir, node.node_id, first)
        assert acks == expected_acks(first, 0), f"seed {seed}: wrong acks {acks}"
        assert acks[-1] == last
        assert set(applied) == covered, f"seed {seed}: some records never applied"
        twice = sorted(seq for seq, n in applied.items() if n > 1)
        assert not twice, f"seed {seed}: applied more than once: {twice[:5]}"
        assert_converged(node.reader(), env.hq_url, node.node_id, acked,
                         f"seed {seed}, shuffled replay")

        # The same again, to an HQ that has it all: acked again, applied zero more times.
        before = hq_snapshot(env.hq_url)
        second = shuffled_with_duplicates(rng, captured)
        acks = replay(env, sync_dir, node.node_id, second)
        assert acks == [last] * len(expected_acks(second, 0)), f"seed {seed}: {acks}"
        assert sum(applied.values()) == len(covered), f"seed {seed}: a replay was re-applied"
        assert hq_snapshot(env.hq_url) == before, f"seed {seed}: a replay changed HQ"


# -- 6. `edge-hq serve` before the broker, and the node's stall after restarts ------------------
def test_hq_serve_reports_connection_only_once_connected(tmp_path: Path, env: SyncEnv) -> None:
    """Broker down: serve says it waits and retries, and claims no worker connected; then does."""
    hq = HQProcess(env, tmp_path / "hq.log", workers=2)
    with ExitStack() as cleanup:
        cleanup.callback(hq.cleanup)
        hq.start(wait=False)
        wait_for(lambda: "waiting for the broker" in hq.log_text() or not hq.running()
                 or READY_LINE in hq.log_text(),
                 HEALTH_TIMEOUT_S, "edge-hq serve to say it waits for the broker")
        assert hq.running(), hq.log_tail()
        assert READY_LINE not in hq.log_text(), "claims connected with the broker down:\n" \
            + hq.log_tail()
        assert "waiting for the broker" in hq.log_text(), hq.log_tail()
        env.broker.start()
        wait_for(lambda: READY_LINE in hq.log_text(), HEALTH_TIMEOUT_S,
                 "edge-hq serve to report its workers connected")
        assert f"2 ingest worker(s) connected to localhost:{env.broker.hq_port}" in hq.log_text()
        env.broker.stop()
        wait_for(lambda: "lost the broker" in hq.log_text(), HEALTH_TIMEOUT_S,
                 "edge-hq serve to report the lost broker")
        assert hq.terminate() == 0, hq.log_tail()


STALL_TICKETS = 100  # 500 outbox records: a few batches, drained in about a second
HQ_AWAY_S = 5.0  # HQ stays away this long after the node published into the void
MAX_PROBES_AWAY = 10  # paced probes in HQ_AWAY_S (HQ_PROBE_* delays give about 4-6)


def count_publishes(agent: Agent, topic: str) -> list[float]:
    """Times of the agent's publishes on `topic` from now on (wraps the real link's publish)."""
    times: list[float] = []
    real, watched = agent.link.publish, topic

    def publish(topic: str, payload: bytes, qos: int = 1, retain: bool = False,
                on_puback: Callable[[int], None] | None = None) -> bool:
        if topic == watched:
            times.append(time.monotonic())
        return real(topic, payload, qos, retain, on_puback)

    agent.link.publish = publish  # type: ignore[method-assign]
    return times


@pytest.mark.slow
@pytest.mark.parametrize("restart", ["broker and hq", "hq"])
def test_node_resends_soon_after_hq_is_back(tmp_path: Path, env: SyncEnv, node: Node,
                                            restart: str, record_property: Any) -> None:
    """HQ (and the broker) restart; the node publishes while HQ's subscription is missing.

    Mosquitto answers those batches with PUBACK 0x10 (no matching subscribers): nobody got
    them. The node must send again soon after HQ is back, not only when ACK_TIMEOUT_S
    expires. Measured: from `edge-hq serve` reporting its worker connected to the whole
    backlog acknowledged, with the real ACK_TIMEOUT_S and a real `edge-hq serve`.
    """
    identity = env.enroll(node.node_id, Path(node.settings["data_dir"]) / "sync")
    env.broker.start()
    app = create_app(node)
    token = app_login(app)
    port = NodeOutbox(node)
    hq = HQProcess(env, tmp_path / "hq.log")
    with ExitStack() as cleanup:
        cleanup.callback(hq.cleanup)
        hq.start()
        agent = Agent(port, identity, __version__)
        agent.start()
        cleanup.callback(agent.stop)
        acked = set(issue_now(app, token, 5))
        wait_until_synced(lambda: port.stats()["count"], "before the restart")
        assert hq.terminate() == 0, hq.log_tail()
        if restart == "broker and hq":
            env.broker.stop()
        sent = agent.bytes_sent
        acked.update(issue_now(app, token, STALL_TICKETS))
        agent.wake()
        if restart == "broker and hq":
            env.broker.start()
        wait_for(lambda: agent.bytes_sent > sent, PROGRESS_TIMEOUT_S,
                 "the node to publish while HQ is away")
        publishes = count_publishes(agent, topics.up(node.node_id))
        time.sleep(HQ_AWAY_S)
        probes = len(publishes)
        hq.start()
        back = time.monotonic()
        wait_until_synced(lambda: port.stats()["count"], f"after the {restart} restart")
        stall = time.monotonic() - back
        assert hq.terminate() == 0, hq.log_tail()
    assert_converged(node.reader(), env.hq_url, node.node_id, acked, restart)
    print(f"{restart} restart: backlog acknowledged {stall:.1f} s after HQ was back "
          f"(ACK_TIMEOUT_S {agent_module.ACK_TIMEOUT_S:.0f} s); {probes} publishes in "
          f"{HQ_AWAY_S:.0f} s while HQ was away")
    record_property("stall_s", round(stall, 1))
    record_property("publishes_while_hq_away", probes)
    assert stall < agent_module.ACK_TIMEOUT_S / 3, f"{stall:.1f} s stall after HQ was back"
    assert probes <= MAX_PROBES_AWAY, f"{probes} publishes in {HQ_AWAY_S} s while HQ was away"
