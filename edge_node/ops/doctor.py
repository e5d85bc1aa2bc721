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

import datetime as dt
import json
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import click
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlite_utils import Database

from certs.hostnames import server_names
from edge_node.config import Settings
from edge_node.ids import iso, parse_iso, utcnow
from edge_node.node import Node, db_path, key_path
from edge_node.replication.runtime import is_enrolled, sync_dir
from edge_node.store.db import DatabaseError, StoreError, integrity_check, open_database
from edge_node.store.keyfile import KeyFileError, load_key_file
from sync.hlc import HLCError, Timestamp

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
CERT_RENEW_FRACTION = 2 / 3  # same point of life as the agent's automatic renewal
CRL_WARN_LEFT_S = 7 * DAY_S
CLOCK_BEHIND_TOLERANCE_S = 2.0
CLOCK_SKEW_WARN_S = 120.0
CLOCK_SKEW_FAIL_S = 3600.0
SERVICE = "edge-node"
HQ_HLC_KEY = "sync_hq_hlc"  # "<HQ's HLC> <local time received>", when the agent records it
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

    def run(self) -> list[Result]:
        """Every check in order; a crashing check becomes a FAIL line."""
        results = []
        for name, check in CHECKS:
            try:
                results.append(check(self))
            except Exception as exc:
                results.append(Result(name, FAIL, f"the check itself failed "
                                      f"({type(exc).__name__}: {exc})",
                                      "run `edge-node doctor --json` and report the output"))
        return results


# -- the node's own files -----------------------------------------------------------------
def _owner_name(uid: int) -> str:
    """User name of `uid` (the number when unknown)."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def check_key_file(doc: Doctor) -> Result:
    """The key file: present, mode 0600 (or stricter), owned by the node's account or root."""
    name, path = "key-file", key_path(doc.settings)
    if not path.exists():
        if CREDSTORE_KEY.exists():
            from edge_node.cli.install import default_bin_dir, doctor_command

            return Result(name, WARN, f"the key is sealed as a systemd credential "
                          f"({CREDSTORE_KEY}); this shell cannot read it",
                          f"run the doctor in the service's sandbox: "
                          f"{doctor_command(default_bin_dir())}")
        return Result(name, FAIL, f"{path} not found",
                      "restore node.key from the key backup (kept apart from the data), "
                      "or point the key_file setting at it")
    info, data_owner = path.stat(), Path(doc.settings["data_dir"]).stat().st_uid
    mode = info.st_mode & 0o777
    if mode & 0o077:
        return Result(name, FAIL, f"{path} has mode {mode:04o}: other users can read the key",
                      f"chmod 600 {path}")
    if info.st_uid not in (0, data_owner):
        return Result(name, FAIL, f"{path} belongs to {_owner_name(info.st_uid)}, not to "
                      f"the node's account {_owner_name(data_owner)} or root",
                      f"chown {_owner_name(data_owner)} {path}")
    try:
        load_key_file(path)
    except (KeyFileError, OSError) as exc:
        return Result(name, FAIL, str(exc), "restore node.key from the key backup")
    return Result(name, PASS, f"{path}: mode {mode:04o}, owner {_owner_name(info.st_uid)}")


def check_encryption(doc: Doctor) -> Result:
    """The database file must not start with the plaintext SQLite header when encrypted."""
    name, path = "encryption", db_path(doc.settings)
    if not path.exists():
        return Result(name, SKIP, f"no database at {path}")
    with path.open("rb") as handle:
        plain = handle.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    if not doc.settings["encrypt_db"]:
        return Result(name, WARN, "database encryption is off (encrypt_db = false)",
                      "development only: a production node must be created with "
                      "encrypt_db = true")
    if plain:
        return Result(name, FAIL, f"{path} is a plaintext SQLite file although encrypt_db "
                      "is on: citizen data is readable by anyone with the disk",
                      "stop the node and restore an encrypted backup; never leave a "
                      "decrypted copy on a node")
    return Result(name, PASS, f"{path} is encrypted (SQLCipher, no plaintext header)")


def check_database(doc: Doctor) -> Result:
    """Open with the node key (read-only) and run integrity_check (and SQLCipher's HMAC check)."""
    name, path = "database", db_path(doc.settings)
    restore = "stop the node (systemctl stop edge-node) and restore the newest backup"
    if not path.exists():
        return Result(name, FAIL, f"no database at {path}",
                      "`edge-node init --center-id ID` for a new node, or restore a backup")
    try:
        keys = load_key_file(key_path(doc.settings)) if doc.settings["encrypt_db"] else None
    except KeyFileError as exc:
        return Result(name, FAIL, f"cannot open without the key ({exc})", "see key-file")
    try:
        db = open_database(path, keys)
    except StoreError:
        return Result(name, FAIL, f"{path} cannot be read with this key: wrong key file, "
                      "or the file is damaged or was tampered with", restore)
    try:
        db.execute("PRAGMA query_only = ON")
        problems = integrity_check(db)
        if keys is not None:  # SQLCipher checks every page's HMAC
            bad = [str(r[0]) for r in db.execute("PRAGMA cipher_integrity_check").fetchall()]
            problems = "; ".join(bad) if bad else problems
    except DatabaseError as exc:
        problems = f"{type(exc).__name__}: {exc}"
    if problems != "ok":
        db.close()
        return Result(name, FAIL, f"integrity check failed: {problems[:300]}", restore)
    doc.db = db
    return Result(name, PASS, f"integrity ok ({path.stat().st_size / MIB:.1f} MiB)")


def check_disk(doc: Doctor) -> Result:
    """Free space where the data directory lives."""
    data_dir, limits = Path(doc.settings["data_dir"]), doc.limits
    usage = shutil.disk_usage(data_dir)
    fraction = usage.free / usage.total if usage.total else 0.0
    finding = (f"{usage.free / MIB:,.0f} MiB free of {usage.total / MIB:,.0f} MiB "
               f"({fraction:.0%}) on {data_dir}")
    fix = (f"free space: remove old files in {_backup_dir(doc.settings)} (copy them off "
           "first), `journalctl --vacuum-size=100M`, `apt-get clean`; or a bigger disk")
    if usage.free < limits.disk_fail_bytes:
        return Result("disk", FAIL, finding + ": writes will fail soon", fix)
    if usage.free < limits.disk_warn_bytes or fraction < limits.disk_warn_fraction:
        return Result("disk", WARN, finding, fix)
    return Result("disk", PASS, finding)


# -- time ---------------------------------------------------------------------------------
def _meta(db: Database, key: str) -> str | None:
    """A node_meta value."""
    row = db.execute("SELECT value FROM node_meta WHERE key = ?", [key]).fetchone()
    return str(row[0]) if row else None


def _span(seconds: float) -> str:
    """A duration for people: 45 s, 12 min, 5.0 h, 3.2 days."""
    seconds = abs(seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * DAY_S:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / DAY_S:.1f} days"


def check_clock(doc: Doctor) -> Result:
    """Not behind the newest stored HLC; skew against HQ when the node has heard HQ's time."""
    from sync.changes import latest_hlc

    if doc.db is None:
        return Result("clock", SKIP, "database unreadable (see database)")
    now = doc.now()
    newest = latest_hlc(doc.db.conn)
    if newest:
        stored = dt.datetime.fromtimestamp(Timestamp.parse(newest).wall_ms / 1000, dt.UTC)
        behind = (stored - now).total_seconds()
        if behind > CLOCK_BEHIND_TOLERANCE_S:
            return Result("clock", FAIL, f"system clock ({now:%Y-%m-%d %H:%M:%S} UTC) is "
                          f"{_span(behind)} behind the newest stored timestamp",
                          "set the clock right: `timedatectl set-ntp true` (or `date -s` "
                          "offline) and check the RTC battery")
    hq = _meta(doc.db, HQ_HLC_KEY)
    if hq is None:
        enrolled = is_enrolled(doc.settings)
        return Result("clock", WARN, "skew against HQ unknown" + (
            "" if enrolled else ": not enrolled") + "; not behind stored timestamps",
            "keep NTP on (`timedatectl set-ntp true`); HQ shows each node's skew in "
            "`edge-hq fleet`" if enrolled else ENROLL_FIX)
    return _hq_skew(hq)


def _hq_skew(value: str) -> Result:
    """Verdict on '<HQ HLC> <local receive time>' from node_meta."""
    stamp, _, seen = value.partition(" ")
    try:
        hq_time = Timestamp.parse(stamp).wall_ms / 1000
        skew = parse_iso(seen).timestamp() - hq_time
    except (HLCError, ValueError):
        return Result("clock", WARN, f"unreadable HQ timestamp {value[:60]!r}", "")
    finding = f"{'ahead of' if skew > 0 else 'behind'} HQ by {_span(skew)}"
    fix = "enable NTP (`timedatectl set-ntp true`) or set the clock from a trusted source"
    if abs(skew) > CLOCK_SKEW_FAIL_S:
        return Result("clock", FAIL, finding, fix)
    if abs(skew) > CLOCK_SKEW_WARN_S:
        return Result("clock", WARN, finding, fix)
    return Result("clock", PASS, finding)


# -- enrollment: certificate, CRL, broker -------------------------------------------------
def _not_enrolled(doc: Doctor, name: str) -> Result | None:
    """WARN 'not enrolled' (the node works offline) or None when enrolled."""
    if is_enrolled(doc.settings):
        return None
    return Result(name, WARN, "not enrolled: the node works offline only", ENROLL_FIX)


def _load_cert(path: Path) -> x509.Certificate:
    """A PEM certificate."""
    return x509.load_pem_x509_certificate(path.read_bytes())


def check_certificate(doc: Doctor) -> Result:
    """The node certificate: issued by the sync dir's CA, carries our key, not expired."""
    name = "certificate"
    if (missing := _not_enrolled(doc, name)) is not None:
        return missing
    directory = sync_dir(doc.settings)
    reenroll = "re-enroll with this fleet's HQ: " + ENROLL_FIX.split(": ", 1)[1]
    try:
        cert, ca = _load_cert(directory / "node.pem"), _load_cert(directory / "ca.pem")
    except (OSError, ValueError) as exc:
        return Result(name, FAIL, f"unreadable certificate in {directory} ({exc})", reenroll)
    try:
        cert.verify_directly_issued_by(ca)
    except Exception:  # InvalidSignature, ValueError, TypeError
        return Result(name, FAIL, f"node certificate was not issued by the CA in "
                      f"{directory / 'ca.pem'} (issuer {cert.issuer.rfc4514_string()})",
                      reenroll)
    if not _carries_node_key(cert, directory / "node.key"):
        return Result(name, FAIL, "node certificate does not carry this node's key (node.key)",
                      reenroll)
    return _validity(name, cert, doc.now(), ca)


def _carries_node_key(cert: x509.Certificate, key_file: Path) -> bool:
    """True when node.key is the private half of the certificate's public key."""
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    try:
        key = serialization.load_pem_private_key(key_file.read_bytes(), None)
    except (OSError, ValueError, TypeError):
        return False
    return bool(key.public_key().public_bytes(*raw) == cert.public_key().public_bytes(*raw))


def _validity(name: str, cert: x509.Certificate, now: dt.datetime,
              ca: x509.Certificate) -> Result:
    """Expired / not yet valid / last third of life / fine."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if ca.not_valid_after_utc < now:
        return Result(name, FAIL, f"the fleet CA expired on {ca.not_valid_after_utc:%Y-%m-%d}",
                      "HQ must issue a new CA and re-enroll the fleet")
    if now < start:
        return Result(name, FAIL, f"certificate not valid before {start:%Y-%m-%d %H:%M} UTC: "
                      "is the clock wrong?", "set the clock right (see clock)")
    if now > end:
        return Result(name, FAIL, f"certificate expired on {end:%Y-%m-%d}: the broker "
                      "refuses this node", "re-enroll: " + ENROLL_FIX.split(": ", 1)[1])
    left = (end - now).total_seconds()
    if now >= start + (end - start) * CERT_RENEW_FRACTION:
        return Result(name, WARN, f"certificate expires on {end:%Y-%m-%d} (in {_span(left)}): "
                      "in the last third of its life, renewal due",
                      "bring the link up: the sync agent asks HQ for a new certificate by "
                      "itself; if it stays due, re-enroll")
    return Result(name, PASS, f"valid until {end:%Y-%m-%d} ({_span(left)} left), chains to "
                  f"{ca.subject.rfc4514_string()}")


def check_crl(doc: Doctor) -> Result:
    """A CRL in the sync dir, if any: signed by the CA, nextUpdate not passed, us not on it."""
    name = "crl"
    if (missing := _not_enrolled(doc, name)) is not None:
        return missing
    directory = sync_dir(doc.settings)
    path = directory / "crl.pem"
    if not path.exists():
        return Result(name, SKIP, "no CRL on this node (the broker enforces revocation)")
    fix = f"get a fresh CRL from HQ (its CA directory's crl.pem) and copy it to {path}"
    try:
        crl = x509.load_pem_x509_crl(path.read_bytes())
        ca, cert = _load_cert(directory / "ca.pem"), _load_cert(directory / "node.pem")
    except (OSError, ValueError) as exc:
        return Result(name, FAIL, f"unreadable CRL or certificate ({exc})", fix)
    public = ca.public_key()
    if not crl.is_signature_valid(public):  # type: ignore[arg-type]
        return Result(name, FAIL, f"{path} is not signed by the fleet CA", fix)
    if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
        return Result(name, FAIL, "this node's certificate is revoked",
                      "ask HQ why; a revoked node must be enrolled again")
    now, next_update = doc.now(), crl.next_update_utc
    age = _span((now - crl.last_update_utc).total_seconds())
    if next_update is None:
        return Result(name, WARN, f"CRL ({age} old) has no nextUpdate", fix)
    if next_update < now:
        return Result(name, FAIL, f"CRL expired on {next_update:%Y-%m-%d %H:%M} UTC "
                      "(nextUpdate passed): a broker using it refuses every client", fix)
    if (next_update - now).total_seconds() < CRL_WARN_LEFT_S:
        return Result(name, WARN, f"CRL expires on {next_update:%Y-%m-%d}", fix)
    return Result(name, PASS, f"CRL {age} old, valid until {next_update:%Y-%m-%d}")


def check_broker(doc: Doctor) -> Result:
    """TCP connect and TLS handshake with the node's client certificate (short timeout)."""
    name = "broker"
    if (missing := _not_enrolled(doc, name)) is not None:
        return missing
    directory = sync_dir(doc.settings)
    try:
        broker = json.loads((directory / "broker.json").read_text())
        host, port = str(broker["host"]), int(broker["port"])
    except (OSError, ValueError, KeyError, TypeError):
        return Result(name, FAIL, f"{directory / 'broker.json'} is missing or malformed",
                      "re-enroll: " + ENROLL_FIX.split(": ", 1)[1])
    try:
        context = ssl.create_default_context(cafile=str(directory / "ca.pem"))
        context.load_cert_chain(str(directory / "node.pem"), str(directory / "node.key"))
    except (OSError, ssl.SSLError) as exc:
        return Result(name, FAIL, f"cannot load the node's TLS files ({exc})", "see certificate")
    chain = (str(directory / "node.pem"), str(directory / "node.key"))
    return _handshake(host, port, context, doc.limits.broker_timeout_s, chain)


def _handshake(host: str, port: int, context: ssl.SSLContext, timeout: float,
               chain: tuple[str, str]) -> Result:
    """Connect, handshake, then read briefly: TLS 1.3 servers refuse a client cert late.

    `chain` is the node's certificate and key files (for a second look at a name mismatch).
    """
    refused = ("the broker refused this node's certificate (revoked, expired or another CA: "
               "see certificate and crl); re-enroll if they pass")
    started = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                context.wrap_socket(raw, server_hostname=host) as tls:
            version = tls.version()
            tls.settimeout(min(1.0, timeout))
            try:
                if tls.recv(1) == b"":
                    return Result("broker", FAIL, f"{host}:{port} closed the connection "
                                  "after the TLS handshake", refused)
            except TimeoutError:
                pass  # accepted: the broker waits for our MQTT CONNECT
    except ssl.SSLCertVerificationError as exc:
        if exc.verify_code in HOSTNAME_MISMATCH_CODES:
            return _name_mismatch(host, port, timeout, chain)
        return Result("broker", FAIL, f"{host}:{port} presents a certificate this node does "
                      f"not trust ({exc.verify_message})",
                      "the broker is not this fleet's, or the node was enrolled with another "
                      "CA: check broker.json, re-enroll")
    except ssl.SSLError as exc:
        return Result("broker", FAIL, f"TLS handshake with {host}:{port} failed "
                      f"({exc.reason or exc})", refused)
    except OSError as exc:
        return Result("broker", WARN, f"{host}:{port} unreachable ({exc.strerror or exc}); "
                      "the node keeps working offline and syncs when the link is back",
                      f"check the WAN link, DNS and firewall towards {host}:{port}; or carry "
                      "a bundle: `edge-node sync export --out /media/usb`")
    elapsed = (time.monotonic() - started) * 1000
    return Result("broker", PASS, f"{host}:{port} reachable, TLS handshake accepted "
                  f"({version}, {elapsed:.0f} ms)")


def _name_mismatch(host: str, port: int, timeout: float, chain: tuple[str, str]) -> Result:
    """The broker's certificate is this fleet's but is not valid for the host in broker.json.

    The node's certificate is fine, so re-enrolling with the same address fails the same way:
    the bundle must name a host the broker certificate holds, or the certificate that host.
    """
    names = _broker_names(host, port, timeout, chain)
    listed = ", ".join(names) if names else "other names"
    example = f"--broker {names[0]}:{port}" if names else f"--broker NAME:{port}"
    return Result("broker", FAIL, f"{host}:{port} presents a certificate valid for {listed}, "
                  f"not {host}: the node can never connect with this address",
                  f"at HQ, sign this node's request again with a name the broker certificate "
                  f"holds ({example}) and install the new bundle; or re-issue the broker "
                  f"certificate with {host} among its names")


def _broker_names(host: str, port: int, timeout: float, chain: tuple[str, str]) -> list[str]:
    """The names in the broker certificate (handshake without the name check), or []."""
    unchecked = ssl.create_default_context()
    unchecked.check_hostname = False
    unchecked.verify_mode = ssl.CERT_NONE  # only reading names: trust was checked already
    try:
        unchecked.load_cert_chain(*chain)
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                unchecked.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return []
    return server_names(x509.load_der_x509_certificate(der)) if der else []


# -- operations: backlog, backup, service -------------------------------------------------
def check_backlog(doc: Doctor) -> Result:
    """Age of the oldest record HQ has not acknowledged."""
    from edge_node.replication.port import NodeOutbox

    if doc.db is None:
        return Result("backlog", SKIP, "database unreadable (see database)")
    # The doctor has the reader()/now()/timestamp() that summary() uses, without a
    # writer thread or migrations.
    summary = NodeOutbox(cast(Node, doc)).summary()
    count, age = summary["count"], summary["oldest_age_s"]
    if not count or age is None:
        return Result("backlog", PASS, "nothing unsent")
    finding = (f"{count} records unsent, oldest {_span(age)} old (link {summary['link']}, "
               f"last ack {summary['last_ack_at'] or 'never'})")
    fix = ("bring the link up (see broker) or carry a bundle: "
           "`edge-node sync export --out /media/usb`") if is_enrolled(doc.settings) \
        else ENROLL_FIX
    if age > doc.limits.backlog_fail_s:
        return Result("backlog", FAIL, finding, fix)
    if age > doc.limits.backlog_warn_s:
        return Result("backlog", WARN, finding, fix)
    return Result("backlog", PASS, finding)


def _backup_dir(settings: Settings) -> Path:
    """Where backups are kept: the backup_dir setting if there is one, else <data_dir>/backups."""
    return Path(settings.get("backup_dir") or Path(settings["data_dir"]) / "backups")


def check_backup(doc: Doctor) -> Result:
    """Age of the newest backup file."""
    directory = _backup_dir(doc.settings)
    fix = "`edge-node backup` now, and `systemctl enable --now edge-node-backup.timer`"
    files = [p for p in directory.glob("*") if p.is_file() and not p.name.startswith(".")
             and not p.name.endswith((".tmp", ".json"))] if directory.is_dir() else []
    if not files:
        return Result("backup", WARN, f"no backups in {directory}", fix)
    newest = max(files, key=lambda p: p.stat().st_mtime)
    age = doc.now().timestamp() - newest.stat().st_mtime
    finding = f"newest backup {newest.name} is {_span(age)} old"
    if age > doc.limits.backup_warn_s:
        return Result("backup", WARN, finding, fix)
    return Result("backup", PASS, finding)


def check_service(doc: Doctor) -> Result:
    """`systemctl is-active edge-node` where systemd runs."""
    if not doc.systemd_running or doc.systemctl is None:
        return Result("service", SKIP, "systemd is not running here")
    state = doc.systemctl(["is-active", SERVICE]) or "unknown"
    logs = f"`journalctl -u {SERVICE} -e`, then `systemctl restart {SERVICE}`"
    if state == "active":
        return Result("service", PASS, f"{SERVICE}.service is active")
    if state == "failed":
        return Result("service", FAIL, f"{SERVICE}.service has failed", logs)
    return Result("service", WARN, f"{SERVICE}.service is {state}",
                  f"`systemctl enable --now {SERVICE}` (units: `edge-node install-systemd`); "
                  + logs)


CHECKS: tuple[tuple[str, Callable[[Doctor], Result]], ...] = (
    ("key-file", check_key_file), ("encryption", check_encryption),
    ("database", check_database), ("disk", check_disk), ("clock", check_clock),
    ("certificate", check_certificate), ("crl", check_crl), ("broker", check_broker),
    ("backlog", check_backlog), ("backup", check_backup), ("service", check_service),
)


def run_checks(settings: Settings, **options: Any) -> list[Result]:
    """Examine the node; `options` go to Doctor (now, thresholds, systemctl...)."""
    doc = Doctor(settings, **options)
    try:
        return doc.run()
    finally:
        doc.close()


def report(results: list[Result]) -> dict[str, Any]:
    """The JSON document of `edge-node doctor --json`."""
    status = worst(results)
    return {"status": status, "exit_code": EXIT_CODES[status],
            "checks": [asdict(r) for r in results]}


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def doctor(ctx: click.Context, as_json: bool) -> None:
    """Check the node: database, key, disk, clock, certificate, broker, backlog, backups.

    One line per check, `PASS|WARN|FAIL|SKIP check: finding — fix: what to try`.
    Exit code: 0 all passed, 1 a warning, 2 a failure. Read-only, safe beside
    a running node.

    Example: edge-node --data-dir /var/lib/edge-node doctor --json
    """
    from edge_node.cli.main import settings_of

    results = run_checks(settings_of(ctx))
    if as_json:
        click.echo(json.dumps(report(results), indent=2))
    else:
        for result in results:
            click.echo(result.line())
    ctx.exit(EXIT_CODES[worst(results)])
