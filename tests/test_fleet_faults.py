"""A fleet under faults: two centers online and a mobile unit by USB (DESIGN.md Guarantees 2-4).

Real processes only: a TLS Mosquitto on a free port, two `edge-hq serve` processes on the
shared subscription, `edge-node serve` for centers A and B (their agents online) and for
the mobile unit M, which serves with sync off and delivers by `edge-node sync export` /
`edge-hq import --ack-out` / `edge-node sync import-ack`, and comes online once: a bundle
HQ imported is sent again over MQTT, and a bundle exported while online is imported after
MQTT delivered it, so records arrive both ways. Meanwhile:

- receptionists and operators create visits and applications over HTTP at all three nodes;
  every 2xx answer is recorded;
- HQ publishes with `edge-hq publish` catalog versions and staff accounts to the fleet and
  decisions on acknowledged applications, plus items a node must refuse: a broken catalog,
  a staff account missing fields, a decision for an unknown reference and a decision sent
  to a node that does not hold the application;
- a chaos loop kill -9s node servers, HQ processes and the broker at random moments.

At the end, at HQ: every acknowledged record once, HQ's rows are exactly the union of the
nodes' rows, acks equal the nodes' last seqs, nothing quarantined, audit chains intact.
At each node: every downstream item processed and acknowledged, each valid one applied
exactly once (one audit entry per catalog version, staff account and decision, nothing
else applied from HQ), each refused one changed nothing and HQ recorded it once
(`edge-hq refused`). The restore variant also restores center A from a backup mid-run.
Both HQ stores. Set SYNC_FAULTS_SEED to replay a run (each test prints the seed it used).
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests
from argon2 import PasswordHasher

from edge_node.bootstrap import DEMO_PASSWORD_SUFFIX, init_node, load_demo
from edge_node.config import load_settings
from edge_node.domain import pii as node_pii
from edge_node.domain.catalog import load_seed
from edge_node.node import Node
from edge_node.store.keyfile import load_key_file
from edge_node.store.schema import SYNCED_TABLES
from hq import pii as hq_pii
from hq.chain import verify_chain
from hq.store import HQDatabase
from sync.pii import PII_FIELDS
from tests.hq_fixtures import postgres_url_with_schema
from tests.sync_env import SyncEnv, hq_rows
from tests.test_sync_faults import (
    EDGE_HQ,
    EDGE_NODE,
    REQUEST_TIMEOUT_S,
    VISIT,
    HQProcess,
    NodeServer,
    Post,
    TicketLoad,
    child_env,
    hq_acked,
    node_db,
    outbox_position,
)
from tests.tls_broker import TLSBroker

pytestmark = pytest.mark.broker  # every test here runs a TLS broker

if TYPE_CHECKING:
    from edge_node.node import Node as OpenNode

CENTERS = {"A": "ISB-01", "B": "LHR-01", "M": "MOB-01"}  # M: the mobile unit (bus)
CHAOS_S = 45.0
CHAOS_PAUSE_S = (0.5, 2.5)
PUBLISH_PAUSE_S = (0.3, 1.2)
CLI_TIMEOUT_S = 120.0
CONVERGE_TIMEOUT_S = 90.0
APP_SERVICE = "nadra_snic_renewal"
DECISIONS = ("ready", "rejected")  # the back office's statuses (sync/merge.py)
HQ_ACTIONS = ("catalog.update", "staff.sync", "application.decision")
MIN_DECISIONS = 10  # valid decisions a run must publish
MOBILE_SCRIPT = (  # (share of the chaos time, step), in this order
    (0.15, "round_trip"), (0.35, "export_then_online"), (0.55, "export_online"),
    (0.70, "offline_then_import"))


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def fleet_templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three initialised demo nodes (own node ids and centers), made once per session."""
    root = tmp_path_factory.mktemp("fleet-templates")
    made = {}
    for name, center in CENTERS.items():
        settings = load_settings(str(root / name), environ={})
        init_node(settings, center)
        opened = Node(settings)
        load_demo(opened)
        opened.close()
        made[name] = root / name
    return made


@pytest.fixture(params=["sqlite", "postgresql"])
def fleet_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SyncEnv]:
    """Broker (not started) and HQ keys, with the HQ store on SQLite or PostgreSQL."""
    broker = TLSBroker(tmp_path / "broker")
    try:
        if request.param == "sqlite":
            yield SyncEnv(tmp_path, broker, str(tmp_path / "hq.db"))
        else:
            for url in postgres_url_with_schema():
                yield SyncEnv(tmp_path, broker, url)
    finally:
        broker.stop(kill=True)


@pytest.fixture
def seed(request: pytest.FixtureRequest, record_property: Any) -> int:
    """The run's random seed (SYNC_FAULTS_SEED or fresh), printed for replays."""
    import os

    value = int(os.environ.get("SYNC_FAULTS_SEED") or random.randrange(1 << 30))
    print(f"{request.node.name}: SYNC_FAULTS_SEED={value}")
    record_property("sync_faults_seed", value)
    return value


# -- running things ------------------------------------------------------------------------------
def run_cli(args: list[str]) -> str:
    """Run a CLI to completion; its stdout (a non-zero exit fails the test with the output)."""
    done = subprocess.run(args, capture_output=True, text=True, env=child_env(),
                          timeout=CLI_TIMEOUT_S, check=False)
    assert done.returncode == 0, f"{' '.join(args[:4])}… exited {done.returncode}:\n" \
        f"{done.stdout[-1500:]}\n{done.stderr[-1500:]}"
    return done.stdout


@dataclass
class Unit:
    """One node of the fleet: data directory, `edge-node serve`, its logins."""

    name: str
    data_dir: Path
    node_id: str
    server: NodeServer
    tokens: dict[str, str] = field(default_factory=dict)

    def cli(self, *args: str) -> str:
        """`edge-node --data-dir <dir> ARGS`."""
        return run_cli([EDGE_NODE, "--data-dir", str(self.data_dir), *args])

    def set_sync(self, enabled: bool) -> None:
        """Whether `edge-node serve` runs the agent (read at the next start)."""
        (self.data_dir / "edge-node.toml").write_text(
            f"sync_enabled = {'true' if enabled else 'false'}\n")

    def login(self, user: str) -> str:
        """A bearer token of a demo account (sessions live in the DB: they survive kill -9)."""
        if user not in self.tokens:
            resp = requests.post(self.server.url + "/api/auth/login", timeout=REQUEST_TIMEOUT_S,
                                 json={"username": user, "password": user + DEMO_PASSWORD_SUFFIX})
            assert resp.status_code == 200, resp.text
            self.tokens[user] = str(resp.json()["token"])
        return self.tokens[user]

    def backlog(self) -> int:
        """Records not yet acknowledged by HQ."""
        with node_db(self.data_dir) as db:
            return outbox_position(db)[2]

    def meta(self, key: str) -> int:
        """An integer of node_meta (0 when absent)."""
        with node_db(self.data_dir) as db:
            row = db.execute("SELECT value FROM node_meta WHERE key = ?", [key]).fetchone()
        return int(row[0]) if row else 0



@contextmanager
def live_poster(server: NodeServer, token: str, path: str, body: dict[str, Any]
                ) -> Iterator[Post]:
    """POST `body` to `path` of the server wherever it listens now (each start picks a port)."""
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {token}"

        def post() -> tuple[int, Any]:
            resp = session.post(server.url + path, json=body, timeout=REQUEST_TIMEOUT_S)
            return resp.status_code, resp.json() if resp.ok else resp.text

        yield post


def application_key(body: Any) -> str:
    """'<reference> <id>' of a created application."""
    return f"{body['reference']} {body['id']}"


# -- HQ publishing ---------------------------------------------------------------------------------
@dataclass
class DownItem:
    """One downstream item queued for one node, and whether the node must apply it."""

    node_id: str
    kind: str  # catalog | staff | decision
    key: str  # catalog version, staff id, or application reference
    valid: bool
    status: str = ""  # decisions: the status sent


def marker_minutes(version: int) -> int:
    """The standard minutes catalog `version` gives the first service (to see which applied)."""
    return 5 + version % 50


class Publisher:
    """A thread running `edge-hq publish` now and then: valid items and ones nodes must refuse."""

    def __init__(self, env: SyncEnv, fleet: Fleet, rng: random.Random) -> None:
        """Start publishing."""
        self.env, self.fleet, self.rng = env, fleet, rng
        self.items: list[DownItem] = []
        self.errors: list[str] = []
        self.owner_untouched: dict[str, str] = {}  # reference -> owner node; never decided
        self._used: set[str] = set()  # references decided or named in a wrong-node decision
        self.version = int(load_seed()["catalog_version"])
        self._hash = PasswordHasher().hash("hq-staff-password")
        self._count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)
        self._thread.start()

    def finish(self) -> list[DownItem]:
        """Stop; every `edge-hq publish` must have succeeded."""
        self._stop.set()
        self._thread.join(CLI_TIMEOUT_S + 10)
        assert not self._thread.is_alive(), "the publisher hangs"
        # A loaded machine publishes less during the chaos: top up to the decisions the
        # checks need (they still travel through the faults' aftermath and the settling).
        for _ in range(4 * MIN_DECISIONS):
            if sum(i.kind == "decision" and i.valid for i in self.items) >= MIN_DECISIONS:
                break
            self._decision()
        assert not self.errors, self.errors[:2]
        return self.items

    def _run(self) -> None:
        """Publish until stopped."""
        steps = [self._catalog, self._catalog, self._broken_catalog, self._staff, self._staff,
                 self._broken_staff, self._decision, self._decision, self._decision,
                 self._decision, self._unknown_reference, self._wrong_node]
        while not self._stop.wait(self.rng.uniform(*PUBLISH_PAUSE_S)):
            try:
                self.rng.choice(steps)()
            except Exception as exc:  # reported at finish, never lost in a thread
                self.errors.append(f"{type(exc).__name__}: {exc}"[:800])

    def _publish(self, *args: str) -> None:
        """`edge-hq --db URL publish ARGS` (fails the test if it fails)."""
        run_cli([EDGE_HQ, "--db", self.env.hq_url, "publish", *args])

    def _file(self, data: Any) -> str:
        """A JSON file to publish."""
        self._count += 1
        path = self.env.root / "publish" / f"{self._count}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(data))
        return str(path)

    def _to_all(self, kind: str, key: str, valid: bool) -> None:
        """A broadcast item: one per enrolled node."""
        for unit in self.fleet.units.values():
            self.items.append(DownItem(unit.node_id, kind, key, valid))

    def _catalog(self) -> None:
        """The next catalog version, with its marker."""
        data = load_seed()
        data["catalog_version"] = self.version + 1
        data["agencies"][0]["services"][0]["standard_minutes"] = marker_minutes(self.version + 1)
        self._publish("catalog", self._file(data))
        self.version += 1
        self._to_all("catalog", str(self.version), True)

    def _broken_catalog(self) -> None:
        """A catalog that fails the node's checks (the next valid one reuses its number)."""
        data = {**load_seed(), "catalog_version": self.version + 1, "agencies": "not a list"}
        self._publish("catalog", self._file(data))
        self._to_all("catalog", str(self.version + 1), False)

    def _staff(self) -> None:
        """A new operator account (hash only) for every node."""
        self._count += 1
        staff_id = f"hq-staff-{self._count}"
        account = {"id": staff_id, "username": f"hqstaff{self._count}",
                   "full_name": f"HQ Staff {self._count}", "role": "operator",
                   "password_hash": self._hash, "active": 1, "language": "ur", "version": 1}
        self._publish("staff", self._file({"accounts": [account]}))
        self._to_all("staff", staff_id, True)

    def _broken_staff(self) -> None:
        """An account without role, hash, version…: refused."""
        self._count += 1
        staff_id = f"hq-broken-{self._count}"
        self._publish("staff", self._file({"accounts": [{"id": staff_id,
                                                         "username": f"broken{self._count}"}]}))
        self._to_all("staff", staff_id, False)

    def _free_application(self) -> tuple[Unit, str] | None:
        """An acknowledged application that HQ holds and no decision named yet, at a random
        node."""
        choices = [(unit, key.split()[0]) for unit in self.fleet.units.values()
                   for key in list(self.fleet.apps[unit.name].acked)]
        with closing(HQDatabase(self.env.hq_url)) as hq:  # HQ decides on what it holds
            known = {r[0] for r in hq.execute("SELECT reference FROM hq_applications")}
        choices = [(unit, ref) for unit, ref in choices if ref not in self._used and ref in known]
        return self.rng.choice(choices) if choices else None

    def _decision(self) -> None:
        """A back-office decision on an acknowledged application; HQ routes it to its node."""
        picked = self._free_application()
        if picked is None:
            return
        unit, ref = picked
        status = self.rng.choice(DECISIONS)
        reason = ["--reason", "Documents incomplete"] if status == "rejected" else []
        self._publish("decision", ref, status, *reason)
        self._used.add(ref)
        self.items.append(DownItem(unit.node_id, "decision", ref, True, status))

    def _refused_at_hq(self, words: str, *args: str) -> None:
        """`edge-hq publish ARGS` refuses, naming the problem, and queues nothing."""
        done = subprocess.run([EDGE_HQ, "--db", self.env.hq_url, "publish", *args],
                              capture_output=True, text=True, env=child_env(),
                              timeout=CLI_TIMEOUT_S, check=False)
        assert done.returncode == 1 and words in done.stderr, (done.stdout, done.stderr)

    def _unchecked(self, node_id: str, ref: str, status: str) -> None:
        """A decision queued without HQ's checks (as an older HQ did): the node refuses it."""
        from hq.downstream import enqueue

        with closing(HQDatabase(self.env.hq_url)) as hq:
            enqueue(hq, "decision", {"reference": ref, "status": status}, node_id)
        self.items.append(DownItem(node_id, "decision", ref, False, status))

    def _unknown_reference(self) -> None:
        """A decision on a reference no node ever issued: HQ refuses to send it; queued
        without the check, the node refuses it."""
        unit = self.rng.choice(list(self.fleet.units.values()))
        self._count += 1
        ref = f"{CENTERS[unit.name]}-NNOPE{self._count}-20200101-00001"
        self._refused_at_hq("unknown application reference", "decision", ref, "ready",
                            "--node", unit.node_id)
        self._unchecked(unit.node_id, ref, "ready")

    def _wrong_node(self) -> None:
        """A decision on one node's application named for another node: HQ refuses to send
        it; queued there without the check, that node refuses it."""
        picked = self._free_application()
        if picked is None:
            return
        owner, ref = picked
        other = self.rng.choice([u for u in self.fleet.units.values() if u is not owner])
        self._refused_at_hq(f"held by node {owner.node_id}", "decision", ref, "ready",
                            "--node", other.node_id)
        self._used.add(ref)
        self.owner_untouched[ref] = owner.node_id
        self._unchecked(other.node_id, ref, "ready")


# -- the fleet ------------------------------------------------------------------------------------
class Fleet:
    """Nodes A, B (online) and M (mobile), two HQ processes, the loads, the fault schedule."""

    def __init__(self, env: SyncEnv, templates: dict[str, Path], root: Path,
                 rng: random.Random) -> None:
        """Copy the templates, enroll each node; nothing runs yet."""
        self.env, self.root, self.rng = env, root, rng
        self.units: dict[str, Unit] = {}
        for name, template in templates.items():
            data_dir = root / name
            shutil.copytree(template, data_dir)
            with node_db(data_dir) as db:
                node_id = str(db.execute("SELECT value FROM node_meta WHERE key = 'node_id'")
                              .fetchone()[0])
            env.enroll(node_id, data_dir / "sync", CENTERS[name])
            self.units[name] = Unit(name, data_dir, node_id,
                                    NodeServer(data_dir, root / f"node-{name}.log"))
        self.hqs = [HQProcess(env, root / f"{w}.log", worker_id=w) for w in ("hqa", "hqb")]
        self.tickets: dict[str, TicketLoad] = {}
        self.apps: dict[str, TicketLoad] = {}
        self.rounds = 0
        self.stats: Counter[str] = Counter()
        self.stale_ack: Path | None = None
        self.late_bundle: Path | None = None
        self.backup: Path | None = None
        self.lost_with_disk: set[str] = set()  # records of A unsynced when its disk died
        self.publisher_untouched: dict[str, str] = {}

    @property
    def mobile(self) -> Unit:
        """The mobile unit."""
        return self.units["M"]

    def start(self) -> None:
        """Broker, both HQ processes, the three nodes (M offline) and their loads."""
        self.env.broker.start()
        for hq in self.hqs:
            hq.start()
        self.mobile.set_sync(False)
        for n, unit in enumerate(self.units.values()):
            unit.server.start()
            citizen = self.register_citizen(unit, f"35202-{1234567 + n}-{2 * n + 1}")
            self.tickets[unit.name] = TicketLoad(partial(
                live_poster, unit.server, unit.login("reception"), "/api/visits", VISIT),
                pause_s=0.15)
            self.apps[unit.name] = TicketLoad(partial(
                live_poster, unit.server, unit.login("operator"), "/api/applications",
                {"service_code": APP_SERVICE, "citizen_id": citizen}), pause_s=0.6,
                key=application_key)

    @staticmethod
    def register_citizen(unit: Unit, cnic: str) -> str:
        """A citizen for the unit's applications; its id."""
        resp = requests.post(unit.server.url + "/api/citizens", timeout=REQUEST_TIMEOUT_S,
                             json={"cnic": cnic, "name": f"Citizen of {unit.name}"},
                             headers={"Authorization": f"Bearer {unit.login('reception')}"})
        assert resp.status_code == 201, resp.text
        return str(resp.json()["id"])

    def cleanup(self) -> None:
        """Stop loads and kill whatever still runs (never raises)."""
        for load in [*self.tickets.values(), *self.apps.values()]:
            load.stop()
        for unit in self.units.values():
            unit.server.cleanup()
        for hq in self.hqs:
            hq.cleanup()

    # -- faults ----------------------------------------------------------------------------
    def chaos(self, seconds: float, extra: list[tuple[float, str]]) -> None:
        """Random kill -9s, with the scripted steps (mobile, backup, restore) at their times."""
        script = sorted([*MOBILE_SCRIPT, *extra])
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            elapsed = (time.monotonic() - start) / seconds
            while script and script[0][0] <= elapsed:
                getattr(self, "step_" + script.pop(0)[1])()
            self.rng.choice([self.kill_node, self.kill_node, self.kill_hq, self.kill_broker])()
            time.sleep(self.rng.uniform(*CHAOS_PAUSE_S))
        # a loaded machine fits fewer rounds in the window: every kind of fault happens once
        if not self.stats["kill_hq"]:
            self.kill_hq()
        if not self.stats["kill_broker"]:
            self.kill_broker()
        if not any(kind.startswith("kill_node") for kind in self.stats):
            self.kill_node()
        for _, step in script:
            getattr(self, "step_" + step)()

    def kill_node(self) -> None:
        """kill -9 one node's server, restart it soon after."""
        unit = self.rng.choice(list(self.units.values()))
        unit.server.kill()
        self.stats[f"kill_node_{unit.name}"] += 1
        time.sleep(self.rng.uniform(0.0, 1.0))
        unit.server.start()

    def kill_hq(self) -> None:
        """kill -9 one HQ process (the other carries on), restart it."""
        hq = self.rng.choice(self.hqs)
        hq.kill()
        self.stats["kill_hq"] += 1
        time.sleep(self.rng.uniform(0.0, 2.0))
        hq.start()

    def kill_broker(self) -> None:
        """kill -9 Mosquitto, restart it on the same port with its persistence."""
        self.env.broker.stop(kill=True)
        self.stats["kill_broker"] += 1
        time.sleep(self.rng.uniform(0.0, 1.5))
        self.env.broker.start()

    # -- the mobile unit -------------------------------------------------------------------
    def export(self) -> Path:
        """`edge-node sync export` of M onto a fresh directory of the stick."""
        self.rounds += 1
        out = self.root / "usb" / f"round-{self.rounds}"
        out.mkdir(parents=True)
        self.mobile.cli("sync", "export", "--out", str(out))
        return next(out.glob("*-up-*.keb"))

    def hq_import(self, bundle: Path) -> Path:
        """`edge-hq import --ack-out`; the ack bundle written."""
        ack_dir = bundle.parent / "ack"
        ack_dir.mkdir(exist_ok=True)
        text = run_cli([EDGE_HQ, "--db", self.env.hq_url, "import", str(bundle), "--keys",
                        str(self.env.hq_dir), "--ack-out", str(ack_dir)])
        self.stats["bundle_records_new"] += int(text.split("accepted (")[1].split()[0])
        return next(ack_dir.glob("*-ack-*.keb"))

    def import_ack(self, ack: Path) -> None:
        """`edge-node sync import-ack` on M."""
        self.mobile.cli("sync", "import-ack", str(ack))

    def restart_mobile(self, online: bool) -> None:
        """M's server killed -9 and started with sync on or off."""
        self.mobile.set_sync(online)
        self.mobile.server.kill()
        self.mobile.server.start()

    def step_round_trip(self) -> None:
        """Bus back at base: export, HQ imports, the ack bundle goes back."""
        self.import_ack(self.hq_import(self.export()))
        self.stats["mobile_round_trips"] += 1

    def step_export_then_online(self) -> None:
        """HQ imports a bundle whose ack never reaches M; M goes online: MQTT resends it."""
        self.stale_ack = self.hq_import(self.export())
        with closing(HQDatabase(self.env.hq_url)) as view:
            ahead = hq_acked(view, self.mobile.node_id)
        with node_db(self.mobile.data_dir) as db:
            self.stats["both_ways_mqtt_after_bundle"] = ahead - outbox_position(db)[0]
        self.restart_mobile(online=True)

    def step_export_online(self) -> None:
        """A bundle written while M is online; HQ gets it only after MQTT delivered it."""
        self.late_bundle = self.export()

    def step_offline_then_import(self) -> None:
        """M offline again; HQ imports the late bundle; M applies the stale, then new ack."""
        self.restart_mobile(online=False)
        assert self.late_bundle is not None and self.stale_ack is not None
        with closing(HQDatabase(self.env.hq_url)) as view:
            before = hq_acked(view, self.mobile.node_id)
        last = int(self.late_bundle.stem.split("-")[-1]) if "-up-empty" not in \
            self.late_bundle.name else 0
        self.stats["both_ways_bundle_after_mqtt"] = max(0, min(before, last))
        ack = self.hq_import(self.late_bundle)
        self.import_ack(self.stale_ack)
        self.import_ack(ack)

    # -- a restore mid-run (center A) ------------------------------------------------------
    def step_backup(self) -> None:
        """`edge-node backup` of A while it serves."""
        out = self.root / "backups"
        self.units["A"].cli("backup", "--out", str(out))
        self.backup = next(out.glob("*.db"))

    def step_restore(self) -> None:
        """A's disk dies (kill -9, database gone, key file kept), `edge-node restore`, start."""
        unit = self.units["A"]
        assert self.backup is not None
        unit.server.kill()
        with node_db(unit.data_dir) as db:
            acked = outbox_position(db)[0]
            self.lost_with_disk = {r[0] for r in db.execute(
                "SELECT pk FROM sync_outbox WHERE seq > ? AND tbl IN ('tickets', "
                "'applications')", [acked])}
        for lost in unit.data_dir.glob("node.db*"):
            lost.unlink()
        unit.cli("restore", str(self.backup))
        unit.server.start()
        self.stats["restored"] += 1

    # -- the end ---------------------------------------------------------------------------
    def settle(self) -> dict[str, set[str]]:
        """Stop the loads, bring everything up, let all flow; the acknowledged record ids."""
        acked: dict[str, set[str]] = {"tickets": set(), "applications": set()}
        for unit in self.units.values():
            acked["tickets"].update(self.tickets[unit.name].finish())
            acked["applications"].update(k.split()[1] for k in self.apps[unit.name].finish())
        if self.env.broker.process is None or self.env.broker.process.poll() is not None:
            self.env.broker.start()
        online = [self.units["A"], self.units["B"]]
        deadline, nudged = time.monotonic() + CONVERGE_TIMEOUT_S, 0.0
        while not all(self.down_done(u) and u.backlog() == 0 for u in online):
            assert time.monotonic() < deadline, "A and B never converged: " + str(
                {u.name: (u.backlog(), self.down_state(u)) for u in online})
            if time.monotonic() - nudged > 5:  # traffic carries HQ's resend of downstream
                nudged = time.monotonic()
                for unit in online:
                    acked["tickets"].update(self.visit_now(unit))
            time.sleep(0.5)
        for _ in range(4):  # M, at base: round trips until nothing is left either way
            if self.down_done(self.mobile) and self.mobile.backlog() == 0:
                break
            self.step_round_trip()
        assert self.down_done(self.mobile) and self.mobile.backlog() == 0, \
            f"M never converged: {self.mobile.backlog()} {self.down_state(self.mobile)}"
        for unit in self.units.values():
            assert unit.server.terminate() == 0, unit.server.log_tail()
        for hq in self.hqs:
            assert hq.terminate() == 0, hq.log_tail()
        return acked

    def visit_now(self, unit: Unit) -> list[str]:
        """One visit (its ticket id when acknowledged)."""
        try:
            resp = requests.post(unit.server.url + "/api/visits", json=VISIT,
                                 timeout=REQUEST_TIMEOUT_S,
                                 headers={"Authorization": f"Bearer {unit.login('reception')}"})
        except requests.RequestException:
            return []
        return [resp.json()["ticket"]["id"]] if resp.status_code == 201 else []

    def down_state(self, unit: Unit) -> tuple[int, int, int]:
        """(HQ's down seq, HQ's down ack, node's applied down seq)."""
        with closing(HQDatabase(self.env.hq_url)) as view:
            row = view.execute("SELECT down_seq, down_acked FROM hq_nodes WHERE node_id = ?",
                               [unit.node_id]).fetchone()
        return int(row[0]), int(row[1]), unit.meta("sync_down_seq")

    def down_done(self, unit: Unit) -> bool:
        """Every queued item applied by the node and acknowledged to HQ."""
        queued, acked, applied = self.down_state(unit)
        return queued == acked == applied


# -- the checks -----------------------------------------------------------------------------------
def check_upstream(env: SyncEnv, fleet: Fleet, acked: dict[str, set[str]],
                   restored: bool) -> None:
    """At HQ: every acknowledged record once, exactly the nodes' rows, acks and chains right."""
    hq = HQDatabase(env.hq_url)
    try:
        quarantined = hq.execute("SELECT reason, detail FROM hq_quarantine").fetchall()
        assert not quarantined, f"quarantined: {quarantined[:3]}"
        origin = dict(hq.execute("SELECT tbl || ' ' || pk, origin FROM hq_records").fetchall())
        for unit in fleet.units.values():
            with node_db(unit.data_dir) as db:
                node_acked, last, backlog = outbox_position(db)
            assert backlog == 0 and node_acked == last, f"{unit.name}: backlog {backlog}"
            assert hq_acked(hq, unit.node_id) == last, f"{unit.name}: HQ's ack differs"
            stray = hq.execute("SELECT count(*) FROM hq_seen WHERE node_id = ?",
                               [unit.node_id]).fetchone()[0]
            assert stray == 0, f"{unit.name}: hq_seen rows beyond the ack"
            problems = verify_chain(hq, unit.node_id)
            if restored and unit.name == "A":
                # Entries the lost disk made after the backup and never got acknowledged are
                # gone with it: HQ may hold a later one without an earlier one, a hole before
                # the restore entry (acknowledged records are checked exactly-once below).
                problems = [p for p in problems if "fork" not in p and not p.startswith("gap")
                            and "previous-hash link broken" not in p]
            assert problems == [], f"{unit.name}: {problems[:3]}"
    finally:
        hq.close()
    node_keys = {unit.node_id: load_key_file(unit.data_dir / "node.key")
                 for unit in fleet.units.values()}
    with closing(HQDatabase(env.hq_url)) as store:
        hq_key = hq_pii.field_key(store)
    for table in SYNCED_TABLES:
        union: dict[str, tuple[str, dict[str, Any]]] = {}
        for unit in fleet.units.values():
            with node_db(unit.data_dir) as db:
                for row in db.query(f"SELECT * FROM {table}"):
                    assert row["id"] not in union, f"{table} {row['id']} at two nodes"
                    union[row["id"]] = (unit.node_id, row)
        theirs = hq_rows(env.hq_url, table)
        extra = set(theirs) - set(union)
        if restored:  # made at A after the backup, synced, then lost with the disk
            extra = {pk for pk in extra if origin[f"{table} {pk}"] != fleet.units["A"].node_id}
        assert not extra, f"{table}: {len(extra)} rows at HQ no node has, e.g. {sorted(extra)[:3]}"
        missing = set(union) - set(theirs)
        assert not missing, f"{table}: {len(missing)} node rows not at HQ"
        wrong_origin = [pk for pk, (node_id, _) in union.items()
                        if origin[f"{table} {pk}"] != node_id]
        assert not wrong_origin, f"{table}: rows under another node at HQ: {wrong_origin[:3]}"
        skip = fleet.units["A"].node_id if restored else None
        differing = [pk for pk, (node_id, row) in union.items()
                     if node_id != skip and row_difference(
                         in_clear(table, row, partial(pick, node_keys[node_id]), node_pii),
                         in_clear(table, theirs[pk], partial(pick, hq_key), hq_pii))]
        assert not differing, f"{table}: HQ's rows differ from the nodes' ({len(differing)}), " \
            f"e.g. {row_difference(union[differing[0]][1], theirs[differing[0]])}"
        if table in acked:
            lost = acked[table] - set(theirs) - fleet.lost_with_disk
            assert not lost, f"{table}: {len(lost)} acknowledged records not at HQ"
    references = Counter(row["reference"] for row in hq_rows(env.hq_url, "applications")
                         .values() if row)
    assert max(references.values()) == 1, "an application reference was issued twice"


def pick(key: Any, column: str) -> Any:
    """The same key for every column (for `in_clear`)."""
    return key


def in_clear(table: str, row: dict[str, Any] | None, key: Callable[[str], Any],
             module: Any) -> dict[str, Any] | None:
    """The row with its PII columns decrypted (each end encrypts under its own key)."""
    if row is None:
        return None
    return {col: module.decrypt(key(col), table, col, value)
            if col in PII_FIELDS.get(table, ()) and value is not None else value
            for col, value in row.items()}


def row_difference(mine: dict[str, Any] | None, theirs: dict[str, Any] | None
                   ) -> dict[str, Any]:
    """{column: (node's value, HQ's value)} where they differ.

    `field_hlc` (citizens) is merge bookkeeping that each side keeps in its own form.
    """
    mine, theirs = mine or {}, theirs or {}
    return {k: (mine.get(k), theirs.get(k)) for k in set(mine) | set(theirs)
            if mine.get(k) != theirs.get(k) and k != "field_hlc"}


def check_downstream(fleet: Fleet, items: list[DownItem], restored: bool) -> None:
    """At each node: every valid item applied exactly once, every refused one changed nothing
    and was reported to HQ."""
    valid_versions = [int(i.key) for i in items if i.kind == "catalog" and i.valid]
    for unit in fleet.units.values():
        mine = [i for i in items if i.node_id == unit.node_id]
        queued, down_acked, applied = fleet.down_state(unit)
        assert queued == len(mine), f"{unit.name}: HQ queued {queued}, published {len(mine)}"
        assert applied == down_acked == queued, f"{unit.name}: down {queued, down_acked, applied}"
        expected: Counter[tuple[str, str]] = Counter()
        with node_db(unit.data_dir) as db:
            for item in mine:
                expected.update(expected_effect(db, item, unit.name == "A" and restored))
            got = Counter(tuple(r) for r in db.execute(
                "SELECT action, entity_id FROM audit_log WHERE actor_id IS NULL AND action IN "
                f"({', '.join('?' * len(HQ_ACTIONS))})", list(HQ_ACTIONS)))
            assert got == expected, f"{unit.name}: applied from HQ {dict(got - expected)} " \
                f"beyond, {dict(expected - got)} missing"
            version = db.execute("SELECT value FROM node_meta WHERE key = 'catalog_version'")
            assert int(version.fetchone()[0]) == max(valid_versions, default=1), unit.name
            minutes = db.execute("SELECT standard_minutes FROM services ORDER BY position "
                                 "LIMIT 1").fetchone()[0]
            if valid_versions:
                assert minutes == marker_minutes(max(valid_versions)), unit.name
            for ref, owner in fleet.publisher_untouched.items():
                if owner == unit.node_id:
                    row = db.execute("SELECT status FROM applications WHERE reference = ?",
                                     [ref]).fetchone()
                    assert row is None or row[0] == "submitted", \
                        f"{unit.name}: {ref} moved by a decision sent to another node"
        check_refusals_reported(fleet, unit, mine, unit.name == "A" and restored)


def check_refusals_reported(fleet: Fleet, unit: Unit, mine: list[DownItem],
                            lost_allowed: bool) -> None:
    """HQ recorded each item the node refused, once, and no valid one (a restored node may
    also refuse decisions on applications that went with its disk)."""
    from hq.refusals import refused_rows

    expected = Counter(refusal_subject(item) for item in mine if not item.valid)
    with closing(HQDatabase(fleet.env.hq_url)) as view:
        got = Counter((r["kind"], r["subject"])
                      for r in refused_rows(view, unit.node_id, limit=100_000))
    if lost_allowed:
        assert not expected - got and all(kind == "decision" for kind, _ in got - expected)
    else:
        assert got == expected, f"{unit.name}: HQ shows refused {dict(got - expected)} " \
            f"beyond, {dict(expected - got)} missing"


def refusal_subject(item: DownItem) -> tuple[str, str]:
    """(kind, subject) as `edge-hq refused` shows a refused item."""
    if item.kind == "catalog":
        return "catalog", f"catalog_version {item.key}"
    if item.kind == "staff":
        return "staff", f"accounts {item.key}"
    return "decision", f"{item.key} -> {item.status}"


def expected_effect(db: Any, item: DownItem, lost_allowed: bool) -> list[tuple[str, str]]:
    """The audit entry a valid item leaves (none for a refused one); checks the state too."""
    if item.kind == "catalog":
        return [("catalog.update", item.key)] if item.valid else []
    if item.kind == "staff":
        row = db.execute("SELECT username FROM staff WHERE id = ?", [item.key]).fetchone()
        assert (row is not None) == item.valid, f"staff {item.key}: valid={item.valid}, {row}"
        return [("staff.sync", item.key)] if item.valid else []
    row = db.execute("SELECT id, status FROM applications WHERE reference = ?",
                     [item.key]).fetchone()
    if not item.valid:
        assert row is None, f"decision for {item.key} went to its own node but was refused?"
        return []
    if row is None and lost_allowed:  # the application went with A's disk
        return []
    assert row is not None, f"decision target {item.key} missing at its node"
    assert row[1] == item.status, f"{item.key}: {row[1]}, decided {item.status}"
    return [("application.decision", row[0])]


# -- the tests ------------------------------------------------------------------------------------
def run_fleet(env: SyncEnv, templates: dict[str, Path], root: Path, seed: int,
              record_property: Any, extra: list[tuple[float, str]]) -> None:
    """The whole scenario, then both checks."""
    rng = random.Random(seed)
    fleet = Fleet(env, templates, root, rng)
    publisher: Publisher | None = None
    try:
        fleet.start()
        publisher = Publisher(env, fleet, rng)
        fleet.chaos(CHAOS_S, extra)
        items = publisher.finish()
        fleet.publisher_untouched = publisher.owner_untouched
        acked = fleet.settle()
    finally:
        if publisher is not None:
            publisher._stop.set()
        fleet.cleanup()
    restored = bool(extra)
    check_upstream(env, fleet, acked, restored)
    check_downstream(fleet, items, restored)
    for name, value in {**fleet.stats, "acked_tickets": len(acked["tickets"]),
                        "acked_applications": len(acked["applications"]),
                        "down_items": len(items),
                        "refused_items": sum(not i.valid for i in items)}.items():
        record_property(name, value)
    print(dict(fleet.stats), {k: len(v) for k, v in acked.items()}, len(items))
    assert len(acked["tickets"]) >= 100 and len(acked["applications"]) >= 20, "too little load"
    assert sum(i.kind == "decision" and i.valid for i in items) >= MIN_DECISIONS, \
        "too few decisions"
    assert all(not i.valid for i in items if i.kind == "staff" and "broken" in i.key)
    assert fleet.stats["kill_broker"] and fleet.stats["kill_hq"], "faults missed"
    assert fleet.stats["both_ways_mqtt_after_bundle"] > 0, "no record went both ways"


@pytest.mark.slow
def test_fleet_under_faults(fleet_env: SyncEnv, fleet_templates: dict[str, Path],
                            tmp_path: Path, seed: int, record_property: Any) -> None:
    """Two centers online, a mobile unit by USB and once online, kill -9 of everything."""
    run_fleet(fleet_env, fleet_templates, tmp_path, seed, record_property, [])


@pytest.mark.slow
@pytest.mark.broker
def test_fleet_under_faults_with_restore(fleet_env: SyncEnv, fleet_templates: dict[str, Path],
                                         tmp_path: Path, seed: int,
                                         record_property: Any) -> None:
    """The same, and center A restored from a backup made mid-run."""
    run_fleet(fleet_env, fleet_templates, tmp_path, seed, record_property,
              [(0.25, "backup"), (0.6, "restore")])


# -- refusals reach HQ (DESIGN: the node "says so in its ack, with the reason") -----------------
@pytest.mark.broker
def test_refused_downstream_items_are_reported_in_the_ack(tmp_path: Path,
                                                           node: OpenNode) -> None:
    """A broken catalog and a decision for an unknown reference: the node's down ack names
    both seqs with a reason, so HQ can show what was not applied."""
    from edge_node import __version__
    from edge_node.replication.port import NodeOutbox
    from hq.downstream import enqueue
    from hq.worker import Worker
    from sync import envelope, topics
    from sync.agent import Agent
    from tests.helpers import wait_for
    from tests.test_sync_faults import RawClient

    env = SyncEnv(tmp_path, TLSBroker(tmp_path / "broker"), str(tmp_path / "hq.db"))
    identity = env.enroll(node.node_id, Path(node.settings["data_dir"]) / "sync")
    env.broker.start()
    try:
        admin = env.broker.identity("wiretap")
        capture = RawClient(env, "wiretap", admin.certfile, admin.keyfile,
                            f"{topics.ROOT}/node/+/up")
        with closing(HQDatabase(env.hq_url)) as hq:
            enqueue(hq, "catalog", {**load_seed(), "catalog_version": 7, "agencies": "x"})
            enqueue(hq, "decision", {"reference": "ISB-01-NNOPE1-20200101-00001",
                                     "status": "ready"}, node.node_id)
        worker = Worker(env.hq_url, env.hq, "localhost", env.broker.port)
        worker.start()
        agent = Agent(NodeOutbox(node), identity, __version__)
        agent.start()
        try:
            wait_for(lambda: NodeOutbox(node).down_seq() == 2, 30, "both items processed")
            time.sleep(1.0)
        finally:
            agent.stop()
            worker.stop()
            capture.close()
        acks = []
        for _, payload in capture.received():
            sealed = envelope.parse(payload)
            if sealed.header["kind"] == "ack":
                acks.append(envelope.open_body(sealed, env.hpke))
    finally:
        env.broker.stop(kill=True)
    assert acks and acks[-1]["down_seq"] == 2
    reported = {entry.get("seq"): entry.get("reason") for ack in acks
                for entry in ack.get("refused", [])}
    assert set(reported) == {1, 2} and all(reported.values()), acks
