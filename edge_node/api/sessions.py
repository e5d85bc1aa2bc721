"""Opening and ending staff sessions, shared by the JSON API and the screens.

Both log in through `login` (so both are throttled per client and audited the
same way) and log out through `end_session` (so both clear the session cache).
"""

from __future__ import annotations

import math
from typing import Any

from sqlite_utils import Database

from edge_node.domain import audit
from edge_node.domain import staff as staff_domain
from edge_node.errors import EdgeError, ThrottledError
from edge_node.node import Node


def login(n: Node, username: str, password: str, client: str) -> dict[str, Any] | EdgeError:
    """`{"token", "staff"}`, or the refusal (returned, so the failure count commits).

    A client over its failed-login budget is refused before the password is
    checked (see `edge_node.login_throttle`); a wrong password counts for the client.
    """
    now = n.now()
    wait = n.login_throttle.wait_s(client, now)
    if wait > 0:
        return ThrottledError(max(1, math.ceil(wait)))

    def run(db: Database) -> dict[str, Any] | EdgeError:
        result = staff_domain.login(db, username, password, now, n.settings)
        if not isinstance(result, EdgeError):
            audit.append(db, result["staff"], "login", "staff", result["staff"]["id"],
                         n.timestamp())
        return result

    result = n.write(run)
    if isinstance(result, EdgeError):
        n.login_throttle.failed(client, now)
    return result


def end_session(n: Node, token: str, staff: dict[str, Any]) -> None:
    """Log a session out: delete it, audit it, then forget it in the cache.

    The cache is dropped after the delete commits, so a request racing the
    logout can not put the token back for another SESSION_CACHE_S.
    """
    now = n.timestamp()

    def run(db: Database) -> None:
        staff_domain.logout(db, token)
        audit.append(db, staff, "logout", "staff", staff["id"], now)

    n.write(run)
    n.sessions.drop(token)
