"""Sync catch-up: a node's queued outbox reaches HQ over MQTT/TLS, against raw paho.

A node that was offline for days holds a backlog in its outbox. Over a real
TLS Mosquitto on loopback (tests.tls_broker), with the node's agent in its
own process and the HQ worker (SQLite store) in this one, this measures:

1. catch-up of 100,000 records until HQ has committed its ack of them all,
   next to a raw paho QoS 1 publisher sending the very same envelope bytes to
   a subscriber over the same broker, and next to HQ ingest alone (the same
   envelopes applied straight to a fresh store, no network);
2. envelope bytes per record against zstd (same level) of the same records;
3. the agent process's memory at a 10,000 and a 100,000 record backlog;
4. goodput through bench.throttle_proxy at 128 kbit/s with 300 ms one way
   (and, in a full run, at DESIGN.md's 50 kbit/s floor).

Run: python -m bench.sync_catchup            (full, writes bench/results/sync_catchup.json)
     python -m bench.sync_catchup --quick    (smaller backlogs, under two minutes, prints only)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import signal
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import zstandard
from paho.mqtt.enums import CallbackAPIVersion

from bench.sync_backlog import fill_outbox
from edge_node.config import load_settings
from edge_node.node import Node
from hq.ingest import Ingest, register_node
from hq.store import HQDatabase
from hq.worker import Worker
from sync import agent as agent_module
from sync import envelope, topics
from sync.transport import MAX_INFLIGHT
from tests.sync_env import SyncEnv
from tests.tls_broker import TLSBroker

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "sync_catchup.json"
FULL = {"large": 100_000, "small": 10_000, "links": {128: 20_000, 50: 8_000}}
QUICK = {"large": 10_000, "small": 5_000, "links": {128: 3_000}}
LINK_DELAY_MS = 300  # one way: 600 ms RTT, as on 2G/VSAT
TARGET_RATIO, TARGET_WIRE, TARGET_GOODPUT = 0.5, 1.2, 0.8
TUNABLES = ("WINDOW_BATCHES", "BATCH_MIN_RECORDS", "BATCH_MAX_RECORDS", "BATCH_MAX_BYTES",
            "ACK_TIMEOUT_S")
TUNABLES_ENV = "BENCH_SYNC_AGENT_SET"  # JSON {name: value}, passed to the agent child
CATCHUP_TIMEOUT_S = 900.0
POLL_S = 0.02
RSS_SAMPLE_S = 0.1
CHILD_STOP_TIMEOUT_S = 30.0


# -- child processes -----------------------------------------------------------------------
def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def cpu_s(pid: int) -> float:
    """CPU time (user + system, all threads) a process has used so far, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Child:
    """A `python -m bench.sync_catchup --child ...` process speaking JSON lines."""

    def __init__(self, argv: list[str], log_path: Path) -> None:
        """Start it and wait for its "ready" line."""
        self.name, self.log_path = argv[0], log_path
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.sync_catchup", "--child", *argv],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT)
        self.peak_rss_kib = 0
        self._stop_sampling = threading.Event()
        self.ready = self.read()

    def read(self) -> dict[str, Any]:
        """The next JSON line; SystemExit with the log's tail if the child died."""
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            raise SystemExit(f"the {self.name} child exited:\n"
                             f"{self.log_path.read_text()[-3000:]}")
        message: dict[str, Any] = json.loads(line)
        return message

    def tell(self, word: str) -> None:
        """One line on its stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()

    def sample_rss(self) -> None:
        """Keep the highest VmRSS seen, every RSS_SAMPLE_S, in a background thread."""
        def loop() -> None:
            while not self._stop_sampling.wait(RSS_SAMPLE_S):
                self.peak_rss_kib = max(self.peak_rss_kib,
                                        proc_status(self.proc.pid).get("VmRSS", 0))
        threading.Thread(target=loop, daemon=True).start()

    def finish(self) -> dict[str, Any]:
        """Tell it to stop; its last report."""
        self._stop_sampling.set()
        self.tell("stop")
        done = self.read()
        self.proc.wait(CHILD_STOP_TIMEOUT_S)
        return done

    def kill(self) -> None:
        """Make sure it is gone (after an error)."""
        self._stop_sampling.set()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def emit(**message: Any) -> None:
    """One JSON line to the parent."""
    print(json.dumps(message), flush=True)


def agent_child(data_dir: str) -> None:
    """Child: open the node, report ready; run its sync agent from "go" until "stop"."""
    from edge_node import __version__
    from edge_node.paths import sync_dir
    from edge_node.replication.port import NodeOutbox
    from sync.identity import load_node_identity

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    apply_tunables(json.loads(os.environ.get(TUNABLES_ENV) or "{}"))
    settings = load_settings(data_dir, environ={})
    node = Node(settings)
    identity = load_node_identity(sync_dir(settings), node.node_id)
    agent = agent_module.Agent(NodeOutbox(node), identity, __version__)
    memory = proc_status(os.getpid())
    emit(event="ready", rss_kib=memory["VmRSS"], hwm_kib=memory["VmHWM"])
    sys.stdin.readline()
    agent.start()
    agent.link.wait_connected(120)
    connected_at = time.monotonic()
    sys.stdin.readline()
    status = agent.status()
    agent.stop()
    node.close()
    emit(event="done", connected_at=connected_at, bytes_sent=status["bytes_sent"],
         batch_records=status["batch_records"], publish_failures=agent.link.publish_failures)


def publisher_child(path: str, port: str, node_dir: str, topic: str) -> None:
    """Child: on "go", connect with the node's certificate and publish every payload, QoS 1."""
    payloads = read_payloads(Path(path))
    emit(event="ready", rss_kib=proc_status(os.getpid())["VmRSS"])
    sys.stdin.readline()
    acked, all_acked = [0], threading.Event()

    def on_publish(client: mqtt.Client, userdata: Any, mid: int, reason: Any,
                   properties: Any) -> None:
        acked[0] += 1
        if acked[0] == len(payloads):
            all_acked.set()

    d = Path(node_dir)
    client = tls_client("bench-publisher", d / "ca.pem", d / "node.pem", d / "node.key")
    client.on_publish = on_publish
    client.connect("localhost", int(port), clean_start=True)
    client.loop_start()
    for payload in payloads:
        client.publish(topic, payload, qos=1)
    all_acked.wait(CATCHUP_TIMEOUT_S)
    sys.stdin.readline()
    client.disconnect()
    client.loop_stop()
    emit(event="done", pubacks=acked[0])


def tls_client(client_id: str, cafile: Path, certfile: Path, keyfile: Path) -> mqtt.Client:
    """A bare paho MQTT 5 client over TLS, with sync.transport's in-flight limit."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5)
    client.tls_set(ca_certs=str(cafile), certfile=str(certfile), keyfile=str(keyfile))
    client.max_inflight_messages_set(MAX_INFLIGHT)
    client.max_queued_messages_set(0)
    return client


def write_payloads(path: Path, payloads: list[bytes]) -> None:
    """Length-prefixed payloads, for the publisher child."""
    with path.open("wb") as out:
        for payload in payloads:
            out.write(struct.pack(">I", len(payload)) + payload)


def read_payloads(path: Path) -> list[bytes]:
    """Inverse of `write_payloads`."""
    data, out, pos = path.read_bytes(), [], 0
    while pos < len(data):
        (size,) = struct.unpack_from(">I", data, pos)
        out.append(data[pos + 4:pos + 4 + size])
        pos += 4 + size
    return out


# -- one scenario: broker, HQ, node with a backlog -----------------------------------------
@dataclass
class Site:
    """A broker, HQ keys and store, and an enrolled node with `records` queued."""

    root: Path
    broker: TLSBroker
    env: SyncEnv
    data_dir: Path
    node_id: str
    records: int
    fill_s: float


def make_site(root: Path, records: int) -> Site:
    """A fresh node with `records` queued, enrolled with a fresh HQ; broker running."""
    from edge_node.bootstrap import init_node  # here: it hashes a password at import (~50 MB)

    broker = TLSBroker(root / "broker")
    env = SyncEnv(root, broker, f"sqlite:///{root / 'hq.db'}")
    settings = load_settings(str(root / "node"), environ={})
    init_node(settings, "ISB-01")
    node = Node(settings)
    try:
        started = time.perf_counter()
        queued = fill_outbox(node, records)
        fill_s = time.perf_counter() - started
        env.enroll(node.node_id, root / "node" / "sync")
        node_id = node.node_id
    finally:
        node.close()
    broker.start()
    return Site(root, broker, env, root / "node", node_id, queued, fill_s)


class CapturingWorker(Worker):
    """The HQ worker, also keeping every upstream payload as it arrived."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """As Worker."""
        super().__init__(*args, **kwargs)
        self.payloads: list[bytes] = []

    def _on_message(self, topic: str, payload: bytes) -> None:
        """Keep a copy, then hand over as usual."""
        if topic.endswith("/up"):
            self.payloads.append(payload)
        super()._on_message(topic, payload)


def hq_acked(conn: HQDatabase, node_id: str) -> int:
    """HQ's committed cumulative ack for the node."""
    row = conn.execute("SELECT acked_seq FROM hq_nodes WHERE node_id = ?", [node_id]).fetchone()
    return int(row[0]) if row else 0


def catch_up(site: Site, label: str) -> dict[str, Any]:
    """Agent child and HQ worker; seconds from "go" until HQ has acked every record."""
    worker = CapturingWorker(site.env.hq_url, site.env.hq, "localhost", site.broker.port)
    worker.start()
    child = None
    hq = HQDatabase(site.env.hq_url)  # encrypted: opened with its key file
    try:
        if not worker.link.wait_connected(30):
            raise SystemExit("the HQ worker could not connect to the broker")
        child = Child(["agent", str(site.data_dir)], site.root / f"{label}-agent.log")
        pids = (child.proc.pid, site.broker.process.pid if site.broker.process else 0)
        cpu0 = cpu_s(pids[0]), time.process_time(), cpu_s(pids[1])
        child.sample_rss()
        go = time.monotonic()
        child.tell("go")
        while hq_acked(hq, site.node_id) < site.records:
            if time.monotonic() - go > CATCHUP_TIMEOUT_S or child.proc.poll() is not None:
                raise SystemExit(f"catch-up stalled at {hq_acked(hq, site.node_id)} of "
                                 f"{site.records}; see {child.log_path}")
            time.sleep(POLL_S)
        elapsed = time.monotonic() - go
        cpu = cpu_s(pids[0]) - cpu0[0], time.process_time() - cpu0[1], cpu_s(pids[1]) - cpu0[2]
        memory = proc_status(child.proc.pid)
        done = child.finish()
    finally:
        if child:
            child.kill()
        worker.stop()
        hq.close()
    per_k = 1000 / site.records
    return {"records": site.records, "seconds": round(elapsed, 3),
            "records_per_s": round(site.records / elapsed, 1),
            "link_up_s": round(done["connected_at"] - go, 3), "payloads": worker.payloads,
            "agent": {"rss_kib_ready": child.ready["rss_kib"],
                      "hwm_kib_ready": child.ready.get("hwm_kib"),
                      "rss_kib_peak": child.peak_rss_kib,
                      "rss_kib_end": memory["VmRSS"], "hwm_kib": memory["VmHWM"],
                      "batch_records_end": done["batch_records"],
                      "bytes_sent": done["bytes_sent"],
                      "ack_timeouts": child.log_path.read_text().count("resending"),
                      "publish_failures": done["publish_failures"]},
            "cpu_ms_per_1000_records": {"node_agent": round(cpu[0] * 1000 * per_k, 1),
                                        "hq_worker_process": round(cpu[1] * 1000 * per_k, 1),
                                        "broker": round(cpu[2] * 1000 * per_k, 1)}}


# -- references: raw paho, HQ ingest alone, zstd -------------------------------------------
def baseline(site: Site, payloads: list[bytes]) -> dict[str, Any]:
    """Publisher child sends the payloads at QoS 1; seconds until this subscriber has all."""
    path = site.root / "payloads.bin"
    write_payloads(path, payloads)
    got, done, subscribed = [0, 0], threading.Event(), threading.Event()

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        got[0] += 1
        got[1] += len(message.payload)
        if got[0] == len(payloads):
            done.set()

    hq = site.env.hq
    # The worker's client id with a clean start: no stored session of the $share/hq group
    # is left to take a share of the messages.
    sub = tls_client("hq-1", Path(hq.cafile), Path(hq.certfile), Path(hq.keyfile))
    sub.on_message = on_message
    sub.on_subscribe = lambda *args: subscribed.set()
    sub.connect("localhost", site.broker.port, clean_start=True)
    sub.loop_start()
    child = None
    try:
        sub.subscribe(topics.HQ_UP_SUBSCRIPTION, qos=1)
        if not subscribed.wait(30):
            raise SystemExit("the baseline subscriber could not subscribe")
        child = Child(["publisher", str(path), str(site.broker.port),
                       str(site.data_dir / "sync"), topics.up(site.node_id)],
                      site.root / "baseline-publisher.log")
        go = time.monotonic()
        child.tell("go")
        if not done.wait(CATCHUP_TIMEOUT_S):
            raise SystemExit(f"the baseline subscriber got {got[0]} of {len(payloads)}")
        elapsed = time.monotonic() - go
        child.finish()
    finally:
        if child:
            child.kill()
        sub.disconnect()
        sub.loop_stop()
    return {"seconds": round(elapsed, 3), "messages": got[0], "bytes": got[1],
            "records_per_s": round(site.records / elapsed, 1)}


def ingest_alone(site: Site, payloads: list[bytes]) -> dict[str, Any]:
    """HQ's Ingest.handle on the same envelopes into a fresh store: no broker, no network."""
    source = HQDatabase(site.env.hq_url)
    center, cert, hpke = source.execute("SELECT center_id, cert_pem, hpke_public FROM hq_nodes "
                                        "WHERE node_id = ?", [site.node_id]).fetchone()
    source.close()
    db = HQDatabase(str(site.root / "hq-ingest-alone.db"))
    register_node(db, site.node_id, center, cert, hpke)
    ingest = Ingest(db, site.env.hq.hpke_private)
    topic = topics.up(site.node_id)
    started, cpu0 = time.perf_counter(), time.process_time()
    for payload in payloads:
        ingest.handle(topic, payload, site.node_id)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu0
    db.close()
    return {"seconds": round(elapsed, 3), "records_per_s": round(site.records / elapsed, 1),
            "cpu_ms_per_1000_records": round(cpu * 1e6 / site.records, 1)}


def batches_of(site: Site, payloads: list[bytes]) -> list[tuple[bytes, list[Any]]]:
    """(payload, records) of each batch envelope, opened with HQ's key."""
    out = []
    for payload in payloads:
        env = envelope.parse(payload)
        if env.header["kind"] == "batch":
            out.append((payload, envelope.open_body(env, site.env.hq.hpke_private)))
    return out


def wire_size(site: Site, payloads: list[bytes]) -> dict[str, Any]:
    """Envelope bytes per record against zstd (same level) of the same records as JSON."""
    batches = batches_of(site, payloads)
    records = [r for _, body in batches for r in body]
    zstd = zstandard.ZstdCompressor(level=envelope.ZSTD_LEVEL)
    wire = sum(len(p) for p, _ in batches)
    per_batch = sum(len(zstd.compress(envelope.canonical(body))) for _, body in batches)
    stream = len(zstd.compress(envelope.canonical(records)))
    n = len(records)
    return {"records": n, "batches": len(batches), "envelope_bytes": wire,
            "bytes_per_record": round(wire / n, 2),
            "json_bytes_per_record": round(len(envelope.canonical(records)) / n, 1),
            "zstd_all_bytes_per_record": round(stream / n, 2),
            "zstd_per_batch_bytes_per_record": round(per_batch / n, 2),
            "ratio_vs_zstd_all": round(wire / stream, 3),
            "ratio_vs_zstd_per_batch": round(wire / per_batch, 3)}


# -- slow link -----------------------------------------------------------------------------
def throttled(site: Site, kbit: int) -> dict[str, Any]:
    """Catch-up with the node behind bench.throttle_proxy; goodput as a share of the link."""
    with (site.root / "proxy.log").open("ab") as log:
        proxy = subprocess.Popen(
            [sys.executable, "-m", "bench.throttle_proxy", "--upstream-port",
             str(site.broker.port), "--rate-kbit", str(kbit), "--delay-ms", str(LINK_DELAY_MS)],
            stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT)
    assert proxy.stdout is not None
    try:
        port = json.loads(proxy.stdout.readline())["port"]
        (site.data_dir / "sync" / "broker.json").write_text(
            json.dumps({"host": "localhost", "port": port}))
        result = catch_up(site, f"link-{kbit}k")
    finally:
        proxy.send_signal(signal.SIGTERM)
        stats = json.loads(proxy.stdout.readline() or "{}")
        proxy.wait(10)
    batches = batches_of(site, result.pop("payloads"))
    received = sum(len(body) for _, body in batches)
    useful = sum(len(p) for p, _ in batches) * site.records / max(received, 1)  # dups excluded
    busy, link_bytes_s = result["seconds"] - result["link_up_s"], kbit * 1000 / 8
    return {**result, "link": {"kbit_s": kbit, "one_way_delay_ms": LINK_DELAY_MS},
            "proxy": stats, "records_received": received,
            "useful_envelope_bytes": round(useful),
            "goodput_bytes_s": round(useful / busy, 1),
            "goodput_share": round(useful / busy / link_bytes_s, 3),
            "goodput_share_incl_connect": round(useful / result["seconds"] / link_bytes_s, 3),
            "wire_bytes_up_per_record": round(stats.get("bytes_up", 0) / site.records, 2)}


# -- the run -------------------------------------------------------------------------------
def agent_tunables() -> dict[str, Any]:
    """The sync agent's module constants in effect."""
    return {n: getattr(agent_module, n) for n in TUNABLES if hasattr(agent_module, n)}


def apply_tunables(values: dict[str, Any]) -> None:
    """Override sync.agent constants here and, through the environment, in the agent child."""
    for name, value in values.items():
        if name not in TUNABLES or not hasattr(agent_module, name):
            raise SystemExit(f"--agent-set: {name} is not one of {', '.join(TUNABLES)}")
        setattr(agent_module, name, type(getattr(agent_module, name))(value))
    os.environ[TUNABLES_ENV] = json.dumps(agent_tunables())


def machine() -> dict[str, Any]:
    """Facts about where the numbers were taken."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=ROOT, check=False).stdout.strip()
    mosquitto = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True,
                               check=False).stdout.splitlines()
    return {"cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
            "paho_mqtt": version("paho-mqtt"), "zstandard": zstandard.__version__,
            "mosquitto": mosquitto[0] if mosquitto else None, "commit": commit or None}


def ratio(ours: float, base: float) -> float:
    """ours / reference, rounded; 0 when the reference measured nothing."""
    return round(ours / base, 3) if base else 0.0


def run(quick: bool, workdir: Path) -> dict[str, Any]:
    """Every scenario in turn, each on its own broker, HQ store and node."""
    sizes: dict[str, Any] = QUICK if quick else FULL
    load_before = os.getloadavg()
    print(f"filling outboxes: {sizes['small']:,} and {sizes['large']:,} records, and "
          f"{', '.join(f'{n:,}' for n in sizes['links'].values())} for the slow links",
          flush=True)
    wanted = {"small": sizes["small"], "large": sizes["large"],
              **{f"link-{k}": n for k, n in sizes["links"].items()}}
    sites: dict[str, Site] = {}
    try:
        for name, records in wanted.items():
            sites[name] = make_site(workdir / name, records)
        print("catch-up of the small backlog ...", flush=True)
        small = catch_up(sites["small"], "small")
        small.pop("payloads")
        print("catch-up of the large backlog ...", flush=True)
        large = catch_up(sites["large"], "large")
        payloads = large.pop("payloads")
        print("baseline: raw paho QoS 1, same envelopes, same broker ...", flush=True)
        base = baseline(sites["large"], payloads)
        print("HQ ingest alone, same envelopes ...", flush=True)
        alone = ingest_alone(sites["large"], payloads)
        wire = wire_size(sites["large"], payloads)
        links = []
        for kbit in sizes["links"]:
            print(f"slow link: {kbit} kbit/s, {LINK_DELAY_MS} ms one way ...", flush=True)
            links.append(throttled(sites[f"link-{kbit}"], kbit))
    finally:
        for site in sites.values():
            site.broker.stop()
    return {"benchmark": "sync_catchup", "quick": quick,
            "when": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
            "agent_tunables": agent_tunables(), "zstd_level": envelope.ZSTD_LEVEL,
            "backlog_fill_s": {n: round(s.fill_s, 2) for n, s in sites.items()},
            "catchup": large, "baseline_raw_paho": base, "hq_ingest_alone": alone,
            "ratio_vs_raw_paho": ratio(large["records_per_s"], base["records_per_s"]),
            "ratio_vs_ingest_alone": ratio(large["records_per_s"], alone["records_per_s"]),
            "wire": wire, "catchup_small": small,
            "memory_hwm_ratio": ratio(large["agent"]["hwm_kib"], small["agent"]["hwm_kib"]),
            "slow_links": links,
            "load_average_1m": {"before": round(load_before[0], 2),
                                "after": round(os.getloadavg()[0], 2)},
            "targets": {"ratio_vs_raw_paho": TARGET_RATIO, "wire_vs_zstd": TARGET_WIRE,
                        "goodput_share": TARGET_GOODPUT}}


def row(name: str, ours: str, ref: str, value: float | None = None, aim: str = "",
        ok: bool = True) -> None:
    """One line of the table."""
    shown = f"{value:>7.3f}" if value is not None else " " * 7
    print(f"{name:<46} {ours:>11} {ref:>11} {shown}  {aim}{'' if ok else '  < aim'}")


def print_report(r: dict[str, Any]) -> None:
    """The table, then where the time and bytes went."""
    large, base, alone, wire = r["catchup"], r["baseline_raw_paho"], r["hq_ingest_alone"], \
        r["wire"]
    small = r["catchup_small"]
    print(f"\n{'':<46} {'ours':>11} {'reference':>11} {'ratio':>7}  aim")
    print("-" * 92)
    row(f"catch-up {large['records']:,} records, records/s", f"{large['records_per_s']:,.0f}",
        f"{base['records_per_s']:,.0f}", r["ratio_vs_raw_paho"],
        f">= {TARGET_RATIO} (ref: raw paho QoS 1)", r["ratio_vs_raw_paho"] >= TARGET_RATIO)
    row("  seconds", f"{large['seconds']:.2f}", f"{base['seconds']:.2f}")
    row("  vs HQ ingest alone (same envelopes), rec/s", f"{large['records_per_s']:,.0f}",
        f"{alone['records_per_s']:,.0f}", r["ratio_vs_ingest_alone"], "(ceiling: HQ's apply)")
    row("bytes/record: envelopes vs zstd of all JSON", f"{wire['bytes_per_record']:.1f}",
        f"{wire['zstd_all_bytes_per_record']:.1f}", wire["ratio_vs_zstd_all"],
        f"<= {TARGET_WIRE}", wire["ratio_vs_zstd_all"] <= TARGET_WIRE)
    row("  vs zstd of each batch's JSON", f"{wire['bytes_per_record']:.1f}",
        f"{wire['zstd_per_batch_bytes_per_record']:.1f}", wire["ratio_vs_zstd_per_batch"])
    mib = 1024
    row(f"agent VmHWM MiB, {large['records']:,} vs {small['records']:,} backlog",
        f"{large['agent']['hwm_kib'] / mib:.1f}", f"{small['agent']['hwm_kib'] / mib:.1f}",
        r["memory_hwm_ratio"], "flat (~1.0)", r["memory_hwm_ratio"] < 1.1)
    for link in r["slow_links"]:
        kbit = link["link"]["kbit_s"]
        row(f"goodput {kbit} kbit/s, {LINK_DELAY_MS} ms one way, B/s",
            f"{link['goodput_bytes_s']:,.0f}", f"{kbit * 1000 / 8:,.0f}", link["goodput_share"],
            f">= {TARGET_GOODPUT}", link["goodput_share"] >= TARGET_GOODPUT)
    print()
    cpu = large["cpu_ms_per_1000_records"]
    print(f"catch-up: {wire['batches']} batches; CPU ms per 1,000 records: node agent "
          f"{cpu['node_agent']}, HQ worker process {cpu['hq_worker_process']} (ingest alone "
          f"{alone['cpu_ms_per_1000_records']}), broker {cpu['broker']}; ack timeouts "
          f"{large['agent']['ack_timeouts']}")
    print(f"raw paho moved {base['bytes'] / 1e6:.1f} MB in {base['messages']} messages; JSON "
          f"of the records is {wire['json_bytes_per_record']} B/record before zstd")
    for link in r["slow_links"]:
        print(f"{link['link']['kbit_s']} kbit/s: {link['records']:,} records in "
              f"{link['seconds']:.1f} s (link up after {link['link_up_s']:.1f} s), "
              f"{link['records_received']:,} received at HQ, {link['agent']['ack_timeouts']} ack "
              f"timeouts, {link['wire_bytes_up_per_record']} wire B/record up (TLS+MQTT), "
              f"{link['goodput_share_incl_connect']:.3f} of the link counting the connect")
    load = r["load_average_1m"]
    print(f"load average (1 min): {load['before']} before, {load['after']} after "
          "(other work on the machine skews the timings)")


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark (or, with --child, one of its helper processes)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="Smaller backlogs; writes no JSON unless --output is given.")
    parser.add_argument("--output", type=Path, default=None,
                        help=f"JSON results file (full run default: {RESULTS.relative_to(ROOT)}).")
    parser.add_argument("--agent-set", action="append", default=[], metavar="NAME=VALUE",
                        help="Override a sync.agent constant for this run, e.g. "
                             "WINDOW_BATCHES=2 (repeatable; recorded in the results).")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        role, *rest = args.child
        if role == "agent":
            agent_child(*rest)
        else:
            publisher_child(*rest)
        return
    apply_tunables(dict(item.partition("=")[::2] for item in args.agent_set))
    print(f"sync catch-up over loopback TLS Mosquitto; sync.agent {agent_tunables()}")
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
        result = run(args.quick, Path(tmp))
    print_report(result)
    output = args.output or (None if args.quick else RESULTS)
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(result, indent=2) + "\n")
        print(f"results written to {output}")


if __name__ == "__main__":
    main()
