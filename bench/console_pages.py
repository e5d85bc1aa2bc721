"""HQ console pages and JSON API over the data-plane benchmark's PostgreSQL store.

The store is built by `bench.hq_queries`' loader (`--records` merge-state records from
`--centers` simulated centers, through the product's merge and projection code). The
console then runs as a real server process (`edge-hq console`, waitress) on a free port;
one admin account signs in once (password + TOTP, `requests` session) and one bearer
token serves the API. Each repeat fetches every page once and, in the same repeat, runs
the same data work the page runs directly against the store (the view's data functions
over one `HQDatabase`/psycopg connection, no HTTP, no templates, no session): the
"bare" time. The table gives p95 of both, their ratio, the spread and the load average.

    .venv/bin/python -m bench.console_pages                   # 1,000,000 records
    .venv/bin/python -m bench.console_pages --records 5000    # quick run
    .venv/bin/python -m bench.console_pages --check           # exit 1 if a page p95 > 300 ms
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyotp
import requests

from bench import hq_queries
from hq import monitoring
from hq.console import accounts, actions, api_tokens, backoffice, openapi
from hq.fleet import fleet
from hq.store import HQDatabase

AIM_P95_MS = 300.0
PASSWORD = "bench horse battery staple"
USER = "bench-admin"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
EDGE_HQ = Path(sys.executable).with_name("edge-hq")


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def node_certificates(db: HQDatabase) -> None:
    """Give the loader's nodes a real (self-signed) certificate, which the fleet page reads."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench-node")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + timedelta(days=365))
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    with db.transaction() as tx:
        tx.execute("UPDATE hq_nodes SET cert_pem = ?", [pem])


def make_account(db: HQDatabase) -> tuple[str, str]:
    """An admin account (sees every page) and an API token: (TOTP secret, token)."""
    with db.transaction() as tx:
        uri = accounts.add(tx, USER, PASSWORD, "admin", None)
        _, token = api_tokens.create(tx, USER)
    return str(pyotp.parse_uri(uri).secret), token


def start_console(url: str, pii_key: str, keys: str, log: Path
                  ) -> tuple[subprocess.Popen[bytes], str]:
    """`edge-hq console` on a free port (output to `log`); returns the process and its base
    URL once it answers."""
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen([str(EDGE_HQ), "--db", url, "--pii-key", pii_key, "console",
                                 "--port", str(port), "--keys", keys],
                                stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"console exited: {log.read_text()[-2000:]}")
        try:
            requests.get(f"{base}/login", timeout=2)
            return proc, base
        except requests.ConnectionError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("console did not answer within 60 s")


def sign_in(base: str, secret: str) -> requests.Session:
    """One session signed in with password and TOTP."""
    session = requests.Session()
    found = CSRF.search(session.get(f"{base}/login", timeout=10).text)
    if not found:
        raise SystemExit("no CSRF token on /login")
    response = session.post(f"{base}/login", timeout=10, data={
        "csrf_token": found.group(1), "username": USER, "password": PASSWORD,
        "code": pyotp.TOTP(secret).now()})
    if response.status_code != 200 or "/login" in response.url:
        raise SystemExit(f"sign-in failed: {response.status_code} {response.url}")
    return session


def api_applications(db: HQDatabase) -> Any:
    """The SQL /api/v1/applications runs for its first page (no filters)."""
    fields = openapi.APPLICATION_FIELDS
    return db.execute(f"SELECT {', '.join(fields)} FROM hq_applications WHERE created_at "
                      "IS NOT NULL ORDER BY created_at, reference LIMIT ?",
                      [openapi.DEFAULT_LIMIT + 1]).fetchall()


def backoffice_data(db: HQDatabase) -> Any:
    """What /backoffice/ computes for an admin (every agency): inbox, names, filters."""
    rows = backoffice.inbox(db, None)
    return rows, backoffice.citizens(db, USER, rows), backoffice.filter_values(db, None)


# page path, API?, the same data work done directly
PAGES: list[tuple[str, bool, Callable[[HQDatabase], Any]]] = [
    ("/fleet/", False, fleet),
    ("/monitoring/", False, monitoring.centers),
    ("/backoffice/", False, backoffice_data),
    ("/actions/", False, actions.recent),
    ("/api/v1/applications", True, api_applications),
    ("/api/v1/fleet", True, fleet),
]


def measure(base: str, session: requests.Session, token: str, db: HQDatabase,
            repeats: int) -> dict[str, Any]:
    """Per page: HTTP time and bare time, interleaved, `repeats` times after one warm-up."""
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {token}"
    times: dict[str, dict[str, list[float]]] = {p: {"page": [], "bare": []} for p, _, _ in PAGES}
    for repeat in range(repeats + 1):
        for path, is_api, bare in PAGES:
            client = api if is_api else session
            start = time.perf_counter()
            response = client.get(base + path, timeout=60, allow_redirects=False)
            page_ms = (time.perf_counter() - start) * 1000
            if response.status_code != 200:
                raise SystemExit(f"{path}: HTTP {response.status_code}")
            start = time.perf_counter()
            bare(db)
            bare_ms = (time.perf_counter() - start) * 1000
            if repeat:  # the first is the warm-up
                times[path]["page"].append(page_ms)
                times[path]["bare"].append(bare_ms)
    out: dict[str, Any] = {}
    for path, sides in times.items():
        out[path] = {side: hq_queries.summary(values) for side, values in sides.items()}
        out[path]["ratio_p95"] = round(out[path]["page"]["p95_ms"] /
                                       max(out[path]["bare"]["p95_ms"], 1e-6), 1)
    return out


def report(results: dict[str, Any], aim_ms: float) -> bool:
    """Print the table; True when every page's p95 meets the aim."""
    print(f"{'page':22} {'page p95':>9} {'bare p95':>9} {'ratio':>7}  "
          f"{'page min/med/max':<24} {'bare min/med/max':<24} aim")
    ok = True
    for path, r in results.items():
        p, b = r["page"], r["bare"]
        met = p["p95_ms"] <= aim_ms
        ok = ok and met
        spread_p = f"{p['min_ms']:.1f}/{p['median_ms']:.1f}/{p['max_ms']:.1f} ms"
        spread_b = f"{b['min_ms']:.1f}/{b['median_ms']:.1f}/{b['max_ms']:.1f} ms"
        print(f"{path:22} {p['p95_ms']:>7.1f}ms {b['p95_ms']:>7.1f}ms {r['ratio_p95']:>6.1f}x  "
              f"{spread_p:<24} {spread_b:<24} {'met' if met else 'MISSED'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    """Load, serve, sign in, measure, print; with --check, 1 when a page misses the aim."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=hq_queries.FULL_RECORDS)
    parser.add_argument("--centers", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if any page's p95 is over --aim-ms")
    parser.add_argument("--aim-ms", type=float, default=AIM_P95_MS,
                        help="the p95 aim per page (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.records < args.centers or args.repeats < 1:
        parser.error("--records must be at least --centers, --repeats at least 1")

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-console-") as tmp, \
            hq_queries.schema(f"bench_console_{uuid.uuid4().hex[:8]}") as url:
        pii_key = str(Path(tmp) / "pii.key")
        os.environ["EDGE_HQ_PII_KEY"] = pii_key
        db = HQDatabase(url)
        proc = None
        try:
            hq_queries.load(db, args, say)
            node_certificates(db)
            secret, token = make_account(db)
            log = Path(tmp) / "console.log"
            proc, base = start_console(url, pii_key, str(Path(tmp) / "keys"), log)
            session = sign_in(base, secret)
            load_before = os.getloadavg()
            try:
                results = measure(base, session, token, db, args.repeats)
            except SystemExit:
                say(log.read_text()[-3000:])
                raise
            load_after = os.getloadavg()
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=10)
            db.close()
    print(f"{args.records:,} records, {args.centers} centers, {args.repeats} repeats; "
          f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    ok = report(results, args.aim_ms)
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
