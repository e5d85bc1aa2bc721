"""Load generator: `concurrency` keep-alive HTTP/1.1 connections, one thread each.

Runs in its own process so the server under test keeps a core to itself.
It sends a fixed number of identical POSTs (after a warm-up) and prints one
JSON object: throughput, latency percentiles and error counts.

The bearer token, if any, comes from $LOADGEN_TOKEN.

Run: python -m bench.loadgen --url http://127.0.0.1:8080/api/visits \
         --body '{"services": ["nadra_snic_renewal"]}' --concurrency 8 --requests 2000
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

REQUEST_TIMEOUT_S = 60.0
TOKEN_ENV = "LOADGEN_TOKEN"  # bearer token, if the server needs one


@dataclass
class Target:
    """Where and what to send."""

    host: str
    port: int
    path: str
    body: bytes
    headers: dict[str, str]


@dataclass
class Phase:
    """What one phase (warm-up or measured) observed."""

    latencies_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0


def _client(target: Target, tickets: itertools.count[int], total: int, phase: Phase,
            lock: threading.Lock, start: threading.Barrier) -> None:
    """One connection: take request numbers until `total` are taken."""
    conn = http.client.HTTPConnection(target.host, target.port, timeout=REQUEST_TIMEOUT_S)
    latencies: list[float] = []
    errors: list[str] = []
    start.wait()
    while next(tickets) < total:
        began = time.perf_counter()
        try:
            conn.request("POST", target.path, target.body, target.headers)
            resp = conn.getresponse()
            resp.read()
        except (OSError, http.client.HTTPException) as exc:
            errors.append(type(exc).__name__)
            conn.close()
            conn = http.client.HTTPConnection(target.host, target.port,
                                              timeout=REQUEST_TIMEOUT_S)
            continue
        if 200 <= resp.status < 300:
            latencies.append(time.perf_counter() - began)
        else:
            errors.append(f"HTTP {resp.status}")
    conn.close()
    with lock:
        phase.latencies_s.extend(latencies)
        phase.errors.extend(errors)


def run_phase(target: Target, concurrency: int, total: int) -> Phase:
    """Send `total` requests over `concurrency` connections; time from first to last."""
    phase, lock = Phase(), threading.Lock()
    tickets = itertools.count()
    start = threading.Barrier(concurrency + 1)
    threads = [threading.Thread(target=_client, args=(target, tickets, total, phase, lock, start))
               for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    phase.wall_s = time.perf_counter() - began
    return phase


def summarize(phase: Phase, concurrency: int) -> dict[str, object]:
    """Throughput and latency figures of a measured phase (latencies in ms)."""
    lat = sorted(phase.latencies_s)
    cuts = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else lat * 99
    return {
        "concurrency": concurrency,
        "ok": len(lat),
        "errors": len(phase.errors),
        "error_kinds": sorted(set(phase.errors))[:5],
        "seconds": round(phase.wall_s, 3),
        "req_per_s": round(len(lat) / phase.wall_s, 1) if phase.wall_s else 0.0,
        "p50_ms": round(cuts[49] * 1000, 2),
        "p99_ms": round(cuts[98] * 1000, 2),
        "mean_ms": round(statistics.fmean(lat) * 1000, 2) if lat else 0.0,
        "max_ms": round(lat[-1] * 1000, 2) if lat else 0.0,
    }


def main(argv: list[str] | None = None) -> None:
    """Parse options, warm up, measure, print the JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="Full URL to POST to.")
    parser.add_argument("--body", required=True, help="JSON request body.")
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--requests", type=int, required=True, help="Measured requests.")
    parser.add_argument("--warmup", type=int, default=50, help="Unmeasured requests first.")
    args = parser.parse_args(argv)
    url = urlsplit(args.url)
    headers = {"Content-Type": "application/json", "Connection": "keep-alive"}
    token = os.environ.get(TOKEN_ENV, "")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    target = Target(url.hostname or "127.0.0.1", url.port or 80, url.path,
                    args.body.encode(), headers)
    warm = run_phase(target, args.concurrency, args.warmup) if args.warmup else Phase()
    measured = run_phase(target, args.concurrency, args.requests)
    result = summarize(measured, args.concurrency)
    result["warmup_ok"] = len(warm.latencies_s)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
