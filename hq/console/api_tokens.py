"""Bearer tokens for the read-only JSON API (hq/console/views/api.py).

A token is shown once when made (`edge-hq api-token create --account USER`); the store
keeps only its SHA-256, the account it acts for, and that account's role and agency at
the time. A revoked token, or one whose account is gone or deactivated, is refused.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from hq.console import accounts
from hq.dbapi import Tx
from hq.store import utc_now

PREFIX = "khq_"
KEYS = ("token_id", "username", "role", "agency", "created_at", "revoked")


class TokenError(ValueError):
    """A bad token request: one sentence, nothing changed."""


def digest(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def create(tx: Tx, username: str) -> tuple[str, str]:
    """A new token for an active account: (token id, the token, shown once)."""
    account = accounts.get(tx, username)
    if account is None or not account["active"]:
        raise TokenError(f"no active account {username!r}")
    token_id, token = secrets.token_hex(8), PREFIX + secrets.token_urlsafe(32)
    tx.execute("INSERT INTO hq_api_tokens (token_id, token_sha256, username, role, agency, "
               "created_at, revoked) VALUES (?, ?, ?, ?, ?, ?, 0)",
               [token_id, digest(token), username, account["role"], account["agency"],
                utc_now()])
    return token_id, token


def revoke(tx: Tx, token_id: str) -> None:
    """Revoke a token by its id."""
    row = tx.execute("SELECT revoked FROM hq_api_tokens WHERE token_id = ?",
                     [token_id]).fetchone()
    if row is None:
        raise TokenError(f"no API token {token_id!r}")
    tx.execute("UPDATE hq_api_tokens SET revoked = 1 WHERE token_id = ?", [token_id])


def listing(db: Tx) -> list[dict[str, Any]]:
    """Every token (never the token or its hash)."""
    rows = db.execute(f"SELECT {', '.join(KEYS)} FROM hq_api_tokens "
                      "ORDER BY created_at, token_id").fetchall()
    return [dict(zip(KEYS, row, strict=True)) for row in rows]


def lookup(db: Tx, token: str) -> dict[str, Any] | None:
    """The live token's binding (username, role, agency), or None."""
    row = db.execute("SELECT t.token_id, t.username, t.role, t.agency FROM hq_api_tokens t "
                     "JOIN hq_accounts a ON a.username = t.username "
                     "WHERE t.token_sha256 = ? AND t.revoked = 0 AND a.active = 1",
                     [digest(token)]).fetchone()
    if row is None:
        return None
    return dict(zip(("token_id", "username", "role", "agency"), row, strict=True))
