"""Ticket issuance: `edge-node serve` against a bare Flask + SQLite baseline.

Measures throughput (req/s) and p50/p99 latency of POST /api/visits at 1, 8
and 32 concurrent clients, for a demo node (real SQLCipher, auth, outbox,
audit, group commit) and for `bench.baseline_app` (one plain SQLite insert
and commit per request) under the same waitress thread count, levels
interleaved. The load generator (`bench.loadgen`) runs in its own process.
Also reports the node's resident memory after all tickets (>= 10,000 in a
full run).

Run: python -m bench.ticket_issuance            (full, writes bench/results/)
     python -m bench.ticket_issuance --quick    (a short smoke run)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlcipher3

from bench.loadgen import TOKEN_ENV
from edge_node.bootstrap import DEMO_PASSWORD_SUFFIX
from edge_node.config import SETTINGS_BY_NAME

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "ticket_issuance.json"
EDGE_NODE = str(Path(sys.executable).with_name("edge-node"))
LEVELS = (1, 8, 32)
FULL_REQUESTS = {1: 1500, 8: 4000, 32: 5000}  # 10,500 measured tickets, plus warm-ups
QUICK_REQUESTS = {1: 100, 8: 300, 32: 400}
FULL_WARMUP, QUICK_WARMUP = 100, 30
THREADS: int = SETTINGS_BY_NAME["threads"].default  # the node's default, used for both
BODY = json.dumps({"services": ["nadra_snic_renewal"]})
TARGET_RATIO = 0.6
STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env() -> dict[str, str]:
    """The environment minus EDGE_NODE_* variables, plus the benchmark's thread count."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_NODE_")}
    env["EDGE_NODE_THREADS"] = str(THREADS)
    return env


class Server:
    """A server subprocess with a health URL, stopped by SIGTERM (then SIGKILL)."""

    def __init__(self, name: str, argv: list[str], port: int, log_path: Path) -> None:
        """Start it and wait until GET /api/health answers."""
        self.name, self.port = name, port
        self.url = f"http://127.0.0.1:{port}"
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                         env=clean_env(), cwd=ROOT)
        self._wait_healthy(log_path)

    def _wait_healthy(self, log_path: Path) -> None:
        """Poll the health endpoint; fail with the log if the process exits or hangs."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} exited:\n{log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/api/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                time.sleep(0.05)
        self.stop()
        raise SystemExit(f"{self.name} did not answer within {STARTUP_TIMEOUT_S} s")

    def rss_kib(self) -> int:
        """Resident set size (VmRSS) of the server process, in KiB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS line")

    def cpu_s(self) -> float:
        """CPU time (user + system, all threads) the server has used so far, in seconds."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not stop in time."""
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextmanager
def running(name: str, argv: list[str], port: int, log_path: Path) -> Iterator[Server]:
    """A server that is stopped however the block ends."""
    server = Server(name, argv, port, log_path)
    try:
        yield server
    finally:
        server.stop()


def init_node(data_dir: Path) -> None:
    """`edge-node init --demo`, as a technician would."""
    subprocess.run([EDGE_NODE, "--data-dir", str(data_dir), "init", "--center-id", "ISB-01",
                    "--demo"], check=True, capture_output=True, env=clean_env())


def login(url: str) -> str:
    """Bearer token of the demo receptionist."""
    body = json.dumps({"username": "reception",
                       "password": "reception" + DEMO_PASSWORD_SUFFIX}).encode()
    req = urllib.request.Request(url + "/api/auth/login", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        token: str = json.load(resp)["token"]
    return token


def load(server: Server, token: str, concurrency: int, requests: int,
         warmup: int) -> dict[str, Any]:
    """Run bench.loadgen in its own process; its summary plus the server's CPU per request.

    CPU time per request hardly moves with other load on the machine, unlike req/s.
    """
    argv = [sys.executable, "-m", "bench.loadgen", "--url", server.url + "/api/visits",
            "--body", BODY, "--concurrency", str(concurrency), "--requests", str(requests),
            "--warmup", str(warmup)]
    env = {**os.environ, TOKEN_ENV: token}  # not in argv: tokens may start with "-"
    cpu_before = server.cpu_s()
    out = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=env, check=False)
    if out.returncode:
        raise SystemExit(f"load generator failed:\n{out.stderr[-2000:]}")
    cpu = server.cpu_s() - cpu_before
    result: dict[str, Any] = json.loads(out.stdout)
    answered = result["ok"] + result["warmup_ok"]
    result["server_cpu_ms_per_req"] = round(cpu * 1000 / answered, 3) if answered else 0.0
    return result


def machine() -> dict[str, Any]:
    """Facts about where the numbers were taken."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=ROOT, check=False).stdout.strip()
    return {"cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
            "sqlcipher_sqlite": sqlcipher3.sqlite_version, "commit": commit or None,
            "waitress_threads": THREADS}


def ratio(ours: float, base: float) -> float:
    """ours / baseline, rounded; 0 when the baseline measured nothing."""
    return round(ours / base, 3) if base else 0.0


def run(quick: bool, workdir: Path) -> dict[str, Any]:
    """Start both servers, drive every level on each in turn, collect the figures."""
    counts = QUICK_REQUESTS if quick else FULL_REQUESTS
    warmup = QUICK_WARMUP if quick else FULL_WARMUP
    data_dir = workdir / "node"
    init_node(data_dir)
    node_port, base_port = free_port(), free_port()
    node_argv = [EDGE_NODE, "--data-dir", str(data_dir), "serve", "--port", str(node_port)]
    base_argv = [sys.executable, "-m", "bench.baseline_app", "--db", str(workdir / "base.db"),
                 "--port", str(base_port), "--threads", str(THREADS)]
    levels: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    with running("edge-node", node_argv, node_port, workdir / "node.log") as node, \
            running("baseline", base_argv, base_port, workdir / "base.log") as base:
        token = login(node.url)
        rss_start = node.rss_kib()
        for clients in LEVELS:
            ours = load(node, token, clients, counts[clients], warmup)
            theirs = load(base, "", clients, counts[clients], warmup)
            levels.append({"clients": clients, "node": ours, "baseline": theirs,
                           "ratio_req_per_s": ratio(ours["req_per_s"], theirs["req_per_s"]),
                           "ratio_cpu_per_req": ratio(ours["server_cpu_ms_per_req"],
                                                      theirs["server_cpu_ms_per_req"])})
            print_level(levels[-1])
        issued = sum(lv["node"]["ok"] + lv["node"]["warmup_ok"] for lv in levels)
        rss_end = node.rss_kib()
    return {"benchmark": "ticket_issuance", "quick": quick,
            "when": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
            "request": {"method": "POST", "path": "/api/visits", "body": json.loads(BODY)},
            "levels": levels, "node_tickets_issued": issued,
            "node_rss_kib": {"after_login": rss_start, "after_all_tickets": rss_end},
            "load_average_1m": {"before": round(load_before[0], 2),
                                "after": round(os.getloadavg()[0], 2)},
            "target_ratio": TARGET_RATIO}


HEADER = (f"{'clients':>7} | {'node req/s':>10} {'p50 ms':>7} {'p99 ms':>7} {'cpu ms':>6} | "
          f"{'base req/s':>10} {'p50 ms':>7} {'p99 ms':>7} {'cpu ms':>6} | {'ratio':>5}")


def print_level(level: dict[str, Any]) -> None:
    """One row of the table (printed as soon as the level is done)."""
    ours, base = level["node"], level["baseline"]
    mark = "" if level["ratio_req_per_s"] >= TARGET_RATIO else "  < target"
    errors = ours["errors"] + base["errors"]
    note = f"  ({errors} errors: {ours['error_kinds'] + base['error_kinds']})" if errors else ""
    print(f"{level['clients']:>7} | {ours['req_per_s']:>10.1f} {ours['p50_ms']:>7.2f} "
          f"{ours['p99_ms']:>7.2f} {ours['server_cpu_ms_per_req']:>6.2f} | "
          f"{base['req_per_s']:>10.1f} {base['p50_ms']:>7.2f} {base['p99_ms']:>7.2f} "
          f"{base['server_cpu_ms_per_req']:>6.2f} | {level['ratio_req_per_s']:>5.2f}{mark}{note}",
          flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark, print the table, write the JSON record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="Few requests per level; writes no JSON unless --output is given.")
    parser.add_argument("--output", type=Path, default=None,
                        help=f"JSON results file (full run default: {RESULTS.relative_to(ROOT)}).")
    args = parser.parse_args(argv)
    print(f"ticket issuance, waitress threads={THREADS}, ratio = node req/s / baseline req/s, "
          "cpu ms = server CPU time per request")
    print(HEADER, flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-tickets-") as tmp:
        result = run(args.quick, Path(tmp))
    rss = result["node_rss_kib"]
    load_avg = result["load_average_1m"]
    print(f"load average (1 min): {load_avg['before']} before, {load_avg['after']} after "
          f"(other work on the machine skews both columns)")
    print(f"node RSS: {rss['after_login'] / 1024:.1f} MiB after login, "
          f"{rss['after_all_tickets'] / 1024:.1f} MiB after "
          f"{result['node_tickets_issued']} tickets")
    output = args.output or (None if args.quick else RESULTS)
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(result, indent=2) + "\n")
        print(f"results written to {output}")


if __name__ == "__main__":
    main()
