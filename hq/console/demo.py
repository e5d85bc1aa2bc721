"""`edge-hq console --demo`: a fresh store gets simulated centers, nodes and accounts.

Only a store with no node and no account is filled, so a real HQ is never
touched. The nodes carry certificates from a throwaway CA made here (they can
never connect), a status as their heartbeats would report it, and a few
tickets and applications in the projections; one account per role gets a
random password and TOTP secret, printed once. The projection rows have no
merge state behind them: `edge-hq rebuild-projections` drops them.
"""

from __future__ import annotations

import json
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pyotp
from cryptography.hazmat.primitives.asymmetric import ec

from certs import pki
from hq import projections
from hq.console import accounts, actions
from hq.dbapi import Tx
from hq.store import HQDatabase, utc_now

NODES = (  # node, center, version, backlog, minutes since last seen, certificate days
    ("demo-lhr-01", "LHR-GULBERG", "0.1.0", 0, 1, 365),
    ("demo-lhr-02", "LHR-GULBERG", "0.1.0", 12, 4, 365),
    ("demo-khi-01", "KHI-SADDAR", "0.1.0", 340, 95, 20),
    ("demo-isb-01", "ISB-G9", "0.0.9", 3, 2, 200),
)
ACCOUNTS = (
    ("demo-admin", "admin", None),
    ("demo-monitor", "monitoring_officer", None),
    ("demo-fleet", "fleet_admin", None),
    ("demo-auditor", "auditor", None),
    ("demo-agency", "agency_officer", "NADRA"),
)
Made = list[tuple[str, str, str, str]]  # username, role, password, TOTP secret


def is_fresh(tx: Tx) -> bool:
    """No node enrolled and no console account."""
    return tx.execute("SELECT 1 FROM hq_nodes").fetchone() is None and \
        tx.execute("SELECT 1 FROM hq_accounts").fetchone() is None


def fill(db: HQDatabase) -> Made | None:
    """Fill a fresh store (one transaction); None when it is not fresh."""
    with db.transaction() as tx:
        if not is_fresh(tx):
            return None
        ca_key, ca_cert = pki.create_ca("Khidmat Edge demo CA (not for use)")
        for node in NODES:
            _node(tx, ca_key, ca_cert, *node)
        made = [_account(tx, *spec) for spec in ACCOUNTS]
        actions.record(tx, "demo", "demo_fill", f"{len(NODES)} nodes", "ok")
    return made


def _node(tx: Tx, ca_key: ec.EllipticCurvePrivateKey, ca_cert: Any, node_id: str,
          center: str, version: str, backlog: int, minutes: int, days: int) -> None:
    """One simulated node with its status and a few projected rows."""
    cert = pki.issue(ca_key, ca_cert, pki.make_csr(pki.new_key(), node_id), days=days)
    now = datetime.now(UTC)
    seen = (now - timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    status = {"state": "online" if minutes < 10 else "offline", "backlog": backlog,
              "version": version, "clock_skew_s": 0, "oldest_unsent_age_s": minutes * 60}
    tx.execute("INSERT INTO hq_nodes (node_id, center_id, cert_pem, status, last_seen, "
               "enrolled_at) VALUES (?, ?, ?, ?, ?, ?)",
               [node_id, center, pki.cert_pem(cert).decode(), json.dumps(status), seen,
                utc_now()])
    today = now.strftime("%Y-%m-%d")
    for n in range(1, 4):
        ticket = str(uuid.uuid4())
        projections.project(tx, "tickets", ticket, node_id, {
            "number": f"A{n:03d}", "daily_number": n, "business_date": today,
            "status": "done" if n < 3 else "waiting", "queue_code": "A", "issued_at": seen},
            "0")
        projections.project(tx, "applications", str(uuid.uuid4()), node_id, {
            "reference": f"{node_id.upper()}-{n:04d}", "ticket_id": ticket,
            "service_code": "cnic_renewal", "agency_code": "NADRA",
            "status": "submitted", "created_at": seen}, "0")


def _account(tx: Tx, username: str, role: str, agency: str | None) -> tuple[str, str, str, str]:
    """One demo account with a random password."""
    password = secrets.token_urlsafe(12)
    uri = accounts.add(tx, username, password, role, agency)
    return username, role, password, str(pyotp.parse_uri(uri).secret)


def describe(made: Made) -> list[str]:
    """What to print: each demo account's password and TOTP secret."""
    if not made:
        return []
    lines = ["demo accounts (add each TOTP secret to an authenticator app; shown once):"]
    lines += [f"  {user:13} {role:19} password {pw}  totp secret {secret}"
              for user, role, pw, secret in made]
    return lines
