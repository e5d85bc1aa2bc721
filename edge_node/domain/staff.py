"""Staff accounts and offline login: Argon2id hashes, lockout, idle sessions.

Accounts are HQ-owned and arrive by sync; `edge-node staff add` and the demo
data create them locally. Session tokens are random; only their SHA-256 is
stored, so a stolen database copy holds no usable token.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlite_utils import Database

from edge_node.config import Settings
from edge_node.domain.roles import ROLES
from edge_node.errors import AuthError, ConflictError, EdgeError, LockedError, ValidationError
from edge_node.ids import iso, new_id, parse_iso

_HASHER = PasswordHasher()
MIN_PASSWORD_CHARS = 10
SESSION_TOUCH_S = 60  # refresh last_seen at most once a minute: reads stay reads
# Verifying against this keeps unknown usernames as slow as known ones.
_DUMMY_HASH = _HASHER.hash("not-a-real-password")


def hash_password(password: str) -> str:
    """Argon2id hash of a password that meets the minimum length."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise ValidationError(f"password: must be at least {MIN_PASSWORD_CHARS} characters")
    return _HASHER.hash(password)


def create_staff(db: Database, username: str, full_name: str, role: str, password: str,
                 now: str, language: str = "en") -> dict[str, Any]:
    """Insert a staff account; username must be new and role known."""
    if role not in ROLES:
        raise ValidationError(f"role: must be one of {', '.join(ROLES)}")
    if db.execute("SELECT 1 FROM staff WHERE username = ?", [username]).fetchone():
        raise ConflictError(f"username already exists: {username}")
    row = {"id": new_id(), "username": username, "full_name": full_name, "role": role,
           "password_hash": hash_password(password), "active": 1, "language": language,
           "version": 1, "updated_at": now}
    db.table("staff").insert(row)
    return public_staff(row)


def public_staff(row: dict[str, Any]) -> dict[str, Any]:
    """A staff row without its password hash."""
    return {k: row[k] for k in ("id", "username", "full_name", "role", "language")}


def _login_state(db: Database, staff_id: str) -> tuple[int, str | None]:
    """(failures in a row, locked_until) of an account."""
    row = db.execute(
        "SELECT failures, locked_until FROM staff_login_state WHERE staff_id = ?", [staff_id]
    ).fetchone()
    return (row[0], row[1]) if row else (0, None)


def login(db: Database, username: str, password: str, now: datetime,
          settings: Settings) -> dict[str, Any] | EdgeError:
    """Check a password and open a session.

    Runs in the writer. A refusal is *returned*, not raised, so the recorded
    failure (and any lockout) commits; the caller raises it afterwards.
    """
    rows = list(db.query("SELECT * FROM staff WHERE username = ? AND active = 1", [username]))
    if not rows:
        _verify(_DUMMY_HASH, password)
        return AuthError("wrong username or password")
    staff = rows[0]
    failures, locked_until = _login_state(db, staff["id"])
    if locked_until and parse_iso(locked_until) > now:
        return LockedError("account locked after repeated failed logins; try again later")
    if not _verify(staff["password_hash"], password):
        _record_failure(db, staff["id"], failures + 1, now, settings)
        return AuthError("wrong username or password")
    db.table("staff_login_state").upsert(
        {"staff_id": staff["id"], "failures": 0, "locked_until": None}, pk="staff_id")
    token = secrets.token_urlsafe(32)
    db.table("sessions").insert({"token_hash": token_hash(token), "staff_id": staff["id"],
                                 "created_at": iso(now), "last_seen_at": iso(now)})
    return {"token": token, "staff": public_staff(staff)}


def _verify(password_hash: str, password: str) -> bool:
    """True when the password matches the hash."""
    try:
        return _HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _record_failure(db: Database, staff_id: str, failures: int, now: datetime,
                    settings: Settings) -> None:
    """Count a failed login; lock the account when the limit is reached."""
    locked_until = None
    if failures >= settings["login_max_failures"]:
        locked_until = iso(now + timedelta(minutes=settings["lockout_minutes"]))
        failures = 0
    db.table("staff_login_state").upsert(
        {"staff_id": staff_id, "failures": failures, "locked_until": locked_until},
        pk="staff_id")


def token_hash(token: str) -> str:
    """What the sessions table stores for a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def session_staff(db: Database, token: str, now: datetime,
                  idle_minutes: int) -> tuple[dict[str, Any], bool]:
    """Staff of a live session and whether last_seen needs a refresh; AuthError if none."""
    rows = list(db.query(
        "SELECT s.last_seen_at, st.* FROM sessions s JOIN staff st ON st.id = s.staff_id "
        "WHERE s.token_hash = ? AND st.active = 1", [token_hash(token)]))
    if not rows:
        raise AuthError("not logged in or session ended; log in again")
    idle = (now - parse_iso(rows[0]["last_seen_at"])).total_seconds()
    if idle > idle_minutes * 60:
        raise AuthError("session ended after inactivity; log in again")
    return public_staff(rows[0]), idle > SESSION_TOUCH_S


def touch_session(db: Database, token: str, now: datetime) -> None:
    """Record activity on a session (keeps it from idling out)."""
    db.execute("UPDATE sessions SET last_seen_at = ? WHERE token_hash = ?",
               [iso(now), token_hash(token)])


def logout(db: Database, token: str) -> None:
    """End a session."""
    db.execute("DELETE FROM sessions WHERE token_hash = ?", [token_hash(token)])


def staff_names(db: Database) -> dict[str, str]:
    """Staff full names by id."""
    return {r["id"]: r["full_name"] for r in db.query("SELECT id, full_name FROM staff")}
