"""`edge-node doctor`: check a node the way a field technician would, one line per check.

Each check returns PASS, WARN, FAIL (or SKIP when it does not apply here) with
what it found and what to try. The worst result is the exit code: 0 pass,
1 warning, 2 failure. Checks only read: the database is opened read-only and
the broker check stops after the TLS handshake, so the doctor is safe to run
beside a serving node. A check that crashes is reported as FAIL, never as a
traceback.

The checks only read: the database through a `query_only` connection (no
migrations, no writer thread), the broker up to the TLS handshake. Run as
root, the doctor hands SQLite's side files (-wal, -shm) it may have created
back to the node's account, or the service could no longer open its database.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from edge_node.config import Settings
from edge_node.ops.checkup import (
    EXIT_CODES,
    FAIL,
    PASS,
    SKIP,
    WARN,
    Doctor,
    Result,
    Thresholds,
    worst,
)
from edge_node.ops.link_checks import (
    check_broker,
    check_certificate,
    check_crl,
)
from edge_node.ops.node_checks import (
    check_backlog,
    check_backup,
    check_clock,
    check_database,
    check_disk,
    check_encryption,
    check_key_file,
    check_pii_age,
    check_service,
)

__all__ = ["EXIT_CODES", "FAIL", "PASS", "SKIP", "WARN", "Doctor", "Result", "Thresholds",
           "report", "run_checks", "worst"]


CHECKS: tuple[tuple[str, Callable[[Doctor], Result]], ...] = (
    ("key-file", check_key_file), ("encryption", check_encryption),
    ("database", check_database), ("disk", check_disk), ("clock", check_clock),
    ("certificate", check_certificate), ("crl", check_crl), ("broker", check_broker),
    ("backlog", check_backlog), ("pii-age", check_pii_age), ("backup", check_backup),
    ("service", check_service),
)


def run_checks(settings: Settings, **options: Any) -> list[Result]:
    """Examine the node; `options` go to Doctor (now, thresholds, systemctl...)."""
    doc = Doctor(settings, **options)
    try:
        return doc.run(CHECKS)
    finally:
        doc.close()


def report(results: list[Result]) -> dict[str, Any]:
    """The JSON document of `edge-node doctor --json`."""
    status = worst(results)
    return {"status": status, "exit_code": EXIT_CODES[status],
            "checks": [asdict(r) for r in results]}


