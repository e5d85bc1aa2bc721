"""HQ console accounts: Argon2id password, TOTP second factor, per-account lockout.

A sign-in needs the password and a current TOTP code; a code's time step is
remembered per account and a step at or before it is refused (no replay within
the code's window). Five failures in a row lock the account for 15 minutes.
The TOTP secret is stored under HQ's PII field key (hq/pii.py), the password as
an Argon2id hash. Unknown users cost one hash verification too (no timing hint).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from hq import pii
from hq.dbapi import Tx
from hq.store import utc_now

ROLES = ("agency_officer", "monitoring_officer", "fleet_admin", "auditor", "admin")
MAX_FAILURES = 5
LOCK_MINUTES = 15
TOTP_WINDOW = 1  # one 30 s step either side: clock drift of a phone
ISSUER = "Khidmat Edge HQ"
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,39}$")
MIN_PASSWORD = 12
_HASHER = PasswordHasher()  # argon2-cffi's default type is Argon2id
_DUMMY = _HASHER.hash("not an account: same cost as a real check")
COLUMNS = ("username", "role", "agency", "active", "failed_count", "locked_until",
           "created_at")


class AccountError(ValueError):
    """A bad account request: one sentence, nothing changed."""


@dataclass(frozen=True)
class SignIn:
    """The outcome of one attempt: the account on success, else why (for the audit)."""

    account: dict[str, Any] | None
    reason: str


def _seal(tx: Tx, secret: str) -> str:
    """The TOTP secret under HQ's field key."""
    return pii.encrypt(pii.field_key(tx), "hq_accounts", "totp_secret", secret)


def _unseal(tx: Tx, stored: str) -> str:
    """Inverse of `_seal`."""
    return pii.decrypt(pii.field_key(tx), "hq_accounts", "totp_secret", stored)


def add(tx: Tx, username: str, password: str, role: str, agency: str | None) -> str:
    """A new active account; returns its TOTP provisioning URI (shown once)."""
    if not USERNAME.match(username):
        raise AccountError("username: 2-40 of a-z 0-9 . _ -, starting with a letter or digit")
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}")
    if (role == "agency_officer") != bool(agency):
        raise AccountError("an agency_officer needs --agency, other roles take none")
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"password: at least {MIN_PASSWORD} characters")
    if tx.execute("SELECT 1 FROM hq_accounts WHERE username = ?", [username]).fetchone():
        raise AccountError(f"account {username} exists already")
    secret = pyotp.random_base32()
    tx.execute("INSERT INTO hq_accounts (username, role, agency, password_hash, "
               "totp_secret_enc, created_at) VALUES (?, ?, ?, ?, ?, ?)",
               [username, role, agency or None, _HASHER.hash(password), _seal(tx, secret),
                utc_now()])
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=ISSUER)


def listing(db: Tx) -> list[dict[str, Any]]:
    """Every account without secrets."""
    rows = db.execute(f"SELECT {', '.join(COLUMNS)} FROM hq_accounts "
                      "ORDER BY username").fetchall()
    return [dict(zip(COLUMNS, row, strict=True)) for row in rows]


def get(db: Tx, username: str) -> dict[str, Any] | None:
    """One active account (no secrets), or None."""
    row = db.execute(f"SELECT {', '.join(COLUMNS)} FROM hq_accounts WHERE username = ? "
                     "AND active = 1", [username]).fetchone()
    return dict(zip(COLUMNS, row, strict=True)) if row else None


def _matching_step(secret: str, code: str, now: float) -> int | None:
    """The time step `code` belongs to within the window, or None."""
    totp = pyotp.TOTP(secret)
    step = int(now) // totp.interval
    for offset in range(-TOTP_WINDOW, TOTP_WINDOW + 1):
        if pyotp.utils.strings_equal(totp.at((step + offset) * totp.interval), code):
            return step + offset
    return None


def _fail(tx: Tx, username: str, failed: int, reason: str) -> SignIn:
    """Count a failure; lock at MAX_FAILURES."""
    locked = None
    if failed + 1 >= MAX_FAILURES:
        locked = (datetime.now(UTC) + timedelta(minutes=LOCK_MINUTES)).strftime(
            "%Y-%m-%dT%H:%M:%S.%fZ")
    tx.execute("UPDATE hq_accounts SET failed_count = ?, locked_until = ? WHERE username = ?",
               [failed + 1, locked, username])
    return SignIn(None, "locked_now" if locked else reason)


def sign_in(tx: Tx, username: str, password: str, code: str,
            now: float | None = None) -> SignIn:
    """Check password and TOTP code (caller's transaction: the outcome is stored)."""
    row = tx.execute("SELECT password_hash, totp_secret_enc, totp_last_step, failed_count, "
                     "locked_until, active FROM hq_accounts WHERE username = ?"
                     + tx_lock(tx), [username]).fetchone()
    if row is None or not row[5]:
        _verify(_DUMMY, password)
        return SignIn(None, "unknown_account")
    pw_hash, sealed, last_step, failed, locked_until, _ = row
    if locked_until and locked_until > utc_now():
        return SignIn(None, "locked")
    if not _verify(pw_hash, password):
        return _fail(tx, username, int(failed), "bad_password")
    step = _matching_step(_unseal(tx, sealed), code.strip(), time.time() if now is None else now)
    if step is None:
        return _fail(tx, username, int(failed), "bad_code")
    if step <= int(last_step):
        return _fail(tx, username, int(failed), "replayed_code")
    tx.execute("UPDATE hq_accounts SET failed_count = 0, locked_until = NULL, "
               "totp_last_step = ? WHERE username = ?", [step, username])
    return SignIn(get(tx, username), "ok")


def tx_lock(tx: Tx) -> str:
    """Row lock on PostgreSQL (two parallel sign-ins must not both use one code)."""
    return " FOR UPDATE" if tx.dialect == "postgresql" else ""


def _verify(pw_hash: str, password: str) -> bool:
    """Argon2 verification that never raises."""
    try:
        return _HASHER.verify(pw_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def unlock(tx: Tx, username: str) -> bool:
    """Clear a lockout; False when there is no such account."""
    cur = tx.execute("UPDATE hq_accounts SET failed_count = 0, locked_until = NULL "
                     "WHERE username = ?", [username])
    return bool(cur.rowcount)
