"""Center staff accounts managed at HQ and published to the center's nodes.

HQ keeps each account it has published in `hq_center_staff` (migration
0008_center_staff) with its Argon2id hash, never a password in clear. Creating
an account or resetting its password makes a one-time password that the caller
shows once; disabling sets active 0. Every change raises the version and queues
a `staff` downstream item (the fields of edge_node/replication/downstream.py
STAFF_FIELDS) to every enrolled, unrevoked node of the account's center, where
the higher version wins. The node has no "must change at first login" flag yet,
so none is sent.
"""

from __future__ import annotations

import re
import secrets
import uuid
from typing import Any

from argon2 import PasswordHasher

from hq.downstream import enqueue_in
from hq.store import HQDatabase, utc_now

NODE_ROLES = ("receptionist", "operator", "supervisor", "manager", "volunteer",
              "technician", "auditor", "kiosk", "display")
"""The node's roles (edge_node/domain/roles.py ROLES; HQ does not import the node)."""
LANGUAGES = ("en", "ur")
STAFF_FIELDS = ("id", "username", "full_name", "role", "password_hash", "active",
                "language", "version")
COLUMNS = ("center_id", *STAFF_FIELDS, "updated_at")
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,39}$")
CENTER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_FULL_NAME = 120
PASSWORD_BYTES = 12  # 16 URL-safe characters
_HASHER = PasswordHasher()  # argon2-cffi's default type is Argon2id


class StaffError(ValueError):
    """A refused staff request: `code` names the cause (the view translates it)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def one_time_password() -> str:
    """A fresh random password to be shown once."""
    return secrets.token_urlsafe(PASSWORD_BYTES)


def listing(db: HQDatabase) -> list[dict[str, Any]]:
    """Every published account (no hash), by center and username."""
    shown = [c for c in COLUMNS if c != "password_hash"]
    rows = db.execute(f"SELECT {', '.join(shown)} FROM hq_center_staff "
                      "ORDER BY center_id, username").fetchall()
    return [dict(zip(shown, row, strict=True)) for row in rows]


def centers(db: HQDatabase) -> list[str]:
    """Centers with at least one enrolled, unrevoked node."""
    return [str(r[0]) for r in db.execute(
        "SELECT DISTINCT center_id FROM hq_nodes WHERE revoked = 0 ORDER BY center_id")]


def create(db: HQDatabase, center: str, username: str, full_name: str, role: str,
           language: str = "en") -> tuple[dict[str, Any], str, int]:
    """A new account published to the center's nodes: (row, one-time password, nodes)."""
    _check(center, username, full_name, role, language)
    password = one_time_password()
    row = {"center_id": center, "id": uuid.uuid4().hex, "username": username,
           "full_name": full_name, "role": role, "password_hash": _HASHER.hash(password),
           "active": 1, "language": language, "version": 1, "updated_at": utc_now()}

    def step(tx: HQDatabase) -> int:
        if tx.execute("SELECT 1 FROM hq_center_staff WHERE center_id = ? AND username = ?",
                      [center, username]).fetchone():
            raise StaffError("username_taken")
        tx.execute(f"INSERT INTO hq_center_staff ({', '.join(COLUMNS)}) VALUES "
                   f"({', '.join('?' for _ in COLUMNS)})", [row[c] for c in COLUMNS])
        return _publish(tx, row)

    count: int = db.retrying(step)
    return row, password, count


def reset_password(db: HQDatabase, staff_id: str) -> tuple[dict[str, Any], str, int]:
    """A new one-time password for the account: (row, password, nodes)."""
    password = one_time_password()
    row, count = _change(db, staff_id, {"password_hash": _HASHER.hash(password)})
    return row, password, count


def disable(db: HQDatabase, staff_id: str) -> tuple[dict[str, Any], int]:
    """The account can no longer sign in at its center (sessions there end)."""
    return _change(db, staff_id, {"active": 0})


def _change(db: HQDatabase, staff_id: str,
            values: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """Apply `values`, raise the version and publish, in one transaction."""

    def step(tx: HQDatabase) -> tuple[dict[str, Any], int]:
        found = tx.execute(f"SELECT {', '.join(COLUMNS)} FROM hq_center_staff WHERE id = ?"
                           + tx.lock_clause(), [staff_id]).fetchone()
        if found is None:
            raise StaffError("unknown_account")
        row = {**dict(zip(COLUMNS, found, strict=True)), **values}
        row["version"], row["updated_at"] = int(row["version"]) + 1, utc_now()
        names = [*values, "version", "updated_at"]
        tx.execute(f"UPDATE hq_center_staff SET {', '.join(f'{n} = ?' for n in names)} "
                   "WHERE id = ?", [*(row[n] for n in names), staff_id])
        return row, _publish(tx, row)

    result: tuple[dict[str, Any], int] = db.retrying(step)
    return result


def _publish(tx: HQDatabase, row: dict[str, Any]) -> int:
    """Queue the account to every unrevoked node of its center; refused when none."""
    nodes = [str(r[0]) for r in tx.execute(
        "SELECT node_id FROM hq_nodes WHERE center_id = ? AND revoked = 0 ORDER BY node_id",
        [row["center_id"]]).fetchall()]
    if not nodes:
        raise StaffError("no_node")
    payload = {"accounts": [{k: row[k] for k in STAFF_FIELDS}]}
    for node in nodes:
        enqueue_in(tx, "staff", payload, node)
    return len(nodes)


def _check(center: str, username: str, full_name: str, role: str, language: str) -> None:
    """Refuse a malformed request before anything is written."""
    if not CENTER.match(center):
        raise StaffError("bad_center")
    if not USERNAME.match(username):
        raise StaffError("bad_username")
    if not full_name or len(full_name) > MAX_FULL_NAME or not full_name.isprintable():
        raise StaffError("bad_full_name")
    if role not in NODE_ROLES:
        raise StaffError("bad_role")
    if language not in LANGUAGES:
        raise StaffError("bad_language")
