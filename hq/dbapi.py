"""What HQ's schema code needs of a store connection, as a Protocol: `hq/store.py`'s
`HQDatabase` provides it, and migrations and projections depend only on this, so the
store can run them when it opens without an import cycle."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from hq.pii_keys import Keyring


class Tx(Protocol):
    """An HQ store connection: SQL with `?` placeholders on either dialect."""

    dialect: str
    pii_keys: Keyring | None  # HQ's PII field key versions (hq/pii_keys.py); None: not configured

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement."""

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement per row."""

    def transaction(self) -> AbstractContextManager[Tx]:
        """BEGIN (IMMEDIATE on SQLite) … COMMIT, or ROLLBACK on an exception."""
