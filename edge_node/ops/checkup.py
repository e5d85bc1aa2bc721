"""What `edge-node doctor` is made of: the verdict of a check, its thresholds and the
read-only view of the node every check examines (the checks are in `node_checks` and
`link_checks`; `doctor` runs them).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlite_utils import Database

from edge_node.config import Settings
from edge_node.ids import iso, utcnow
from edge_node.paths import db_path

PASS, WARN, FAIL, SKIP = "PASS", "WARN", "FAIL", "SKIP"
EXIT_CODES = {PASS: 0, SKIP: 0, WARN: 1, FAIL: 2}
MIB = 1 << 20
DAY_S = 86_400.0
# Defaults of the doctor_* settings (config.py repeats them; a test keeps them equal).
DISK_WARN_MIB = 1024
DISK_WARN_PERCENT = 10
DISK_FAIL_MIB = 100
BROKER_TIMEOUT_S = 5
# Fixed thresholds (Thresholds(...) overrides them in tests).
BACKLOG_WARN_S = 1 * DAY_S
BACKLOG_FAIL_S = 7 * DAY_S
BACKUP_WARN_S = 2 * DAY_S
# Citizen data may outlive retention_days by the business-day rounding of visits and the
# daily job's interval (a day each): past this margin the purge is not running.
PII_AGE_MARGIN_S = 3 * DAY_S
CERT_RENEW_FRACTION = 2 / 3  # same point of life as the agent's automatic renewal
CRL_WARN_LEFT_S = 7 * DAY_S
CLOCK_BEHIND_TOLERANCE_S = 2.0
CLOCK_SKEW_WARN_S = 120.0
CLOCK_SKEW_FAIL_S = 3600.0
SERVICE = "edge-node"
SQLITE_MAGIC = b"SQLite format 3\x00"
CREDSTORE_KEY = Path("/etc/credstore.encrypted/edge-node-key")
# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH
HOSTNAME_MISMATCH_CODES = (62, 64)
ENROLL_FIX = ("enroll it: `edge-node enroll request`, have HQ sign the request, then "
              "`edge-node enroll install BUNDLE --ca-fingerprint FP`")


@dataclass(frozen=True)
class Thresholds:
    """Limits of the checks; from the settings, or given by tests."""

    disk_warn_bytes: int = DISK_WARN_MIB * MIB
    disk_warn_fraction: float = DISK_WARN_PERCENT / 100
    disk_fail_bytes: int = DISK_FAIL_MIB * MIB
    backlog_warn_s: float = BACKLOG_WARN_S
    backlog_fail_s: float = BACKLOG_FAIL_S
    backup_warn_s: float = BACKUP_WARN_S
    pii_margin_s: float = PII_AGE_MARGIN_S
    broker_timeout_s: float = BROKER_TIMEOUT_S

    @classmethod
    def from_settings(cls, settings: Settings) -> Thresholds:
        """The doctor_* settings, defaulting to the constants above."""
        return cls(
            disk_warn_bytes=settings.get("doctor_disk_warn_mib", DISK_WARN_MIB) * MIB,
            disk_warn_fraction=settings.get("doctor_disk_warn_percent", DISK_WARN_PERCENT) / 100,
            disk_fail_bytes=settings.get("doctor_disk_fail_mib", DISK_FAIL_MIB) * MIB,
            broker_timeout_s=settings.get("doctor_broker_timeout_seconds", BROKER_TIMEOUT_S))


@dataclass(frozen=True)
class Result:
    """One check's verdict."""

    check: str
    status: str
    finding: str
    fix: str = ""

    def line(self) -> str:
        """`STATUS check: finding — fix: what to try` (no fix on PASS/SKIP)."""
        fix = f" — fix: {self.fix}" if self.fix and self.status in (WARN, FAIL) else ""
        return f"{self.status} {self.check}: {self.finding}{fix}"


def worst(results: list[Result]) -> str:
    """The most severe status (PASS when there is nothing)."""
    return max((r.status for r in results), key=EXIT_CODES.__getitem__, default=PASS)


def _run_systemctl(args: list[str]) -> str:
    """stdout of systemctl (the service check's window on systemd)."""
    done = subprocess.run(["systemctl", *args], capture_output=True, text=True,  # noqa: S603,S607
                          timeout=10, check=False)
    return done.stdout.strip()


class Doctor:
    """The node under examination, seen through one read-only connection."""

    def __init__(self, settings: Settings, now: Callable[[], dt.datetime] = utcnow,
                 thresholds: Thresholds | None = None,
                 systemctl: Callable[[list[str]], str] | None = _run_systemctl,
                 systemd_running: bool | None = None) -> None:
        """`now` is the system clock (tests pass a fake); systemctl=None means no systemd."""
        self.settings = settings
        self.now = now
        self.limits = thresholds or Thresholds.from_settings(settings)
        self.systemctl = systemctl
        self.systemd_running = (Path("/run/systemd/system").is_dir() and bool(
            shutil.which("systemctl"))) if systemd_running is None else systemd_running
        self.db: Database | None = None  # set by the database check when it passes

    # The part of Node that NodeOutbox.summary() reads, over the read-only connection.
    def reader(self) -> Database:
        """The read-only connection (only once the database check passed)."""
        assert self.db is not None
        return self.db

    def timestamp(self) -> str:
        """The (possibly fake) current time in storage form."""
        return iso(self.now())

    def close(self) -> None:
        """Close the connection; as root, give SQLite's side files back to the node."""
        if self.db is not None:
            self.db.close()
            self.db = None
        data_dir = Path(self.settings["data_dir"])
        if os.geteuid() == 0 and data_dir.is_dir():
            owner = data_dir.stat()
            for path in data_dir.glob(db_path(self.settings).name + "-*"):
                if path.stat().st_uid != owner.st_uid:
                    os.chown(path, owner.st_uid, owner.st_gid)

    def run(self, checks: Checks) -> list[Result]:
        """Every check in order; a crashing check becomes a FAIL line."""
        results = []
        for name, check in checks:
            try:
                results.append(check(self))
            except Exception as exc:
                results.append(Result(name, FAIL, f"the check itself failed "
                                      f"({type(exc).__name__}: {exc})",
                                      "run `edge-node doctor --json` and report the output"))
        return results



def span(seconds: float) -> str:
    """A duration for people: 45 s, 12 min, 5.0 h, 3.2 days."""
    seconds = abs(seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * DAY_S:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / DAY_S:.1f} days"


Checks = tuple[tuple[str, Callable[[Doctor], Result]], ...]
