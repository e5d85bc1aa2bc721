"""The doctor's checks of the node itself: key file, encryption, database, disk, clock,
backlog, backups and the service."""

from __future__ import annotations

import datetime as dt
import pwd
import shutil
from pathlib import Path

from edge_node.cli.install import default_bin_dir, doctor_command
from edge_node.domain.retention import oldest_pii
from edge_node.ids import iso, parse_iso
from edge_node.ops.checkup import (
    CLOCK_BEHIND_TOLERANCE_S,
    CLOCK_SKEW_FAIL_S,
    CLOCK_SKEW_WARN_S,
    CREDSTORE_KEY,
    ENROLL_FIX,
    FAIL,
    MIB,
    PASS,
    SERVICE,
    SKIP,
    SQLITE_MAGIC,
    WARN,
    Doctor,
    Result,
    span,
)
from edge_node.paths import backup_dir, db_path, is_enrolled, key_path
from edge_node.replication.status import sync_status
from edge_node.store import meta
from edge_node.store.db import DatabaseError, StoreError, integrity_check, open_database
from edge_node.store.keyfile import KeyFileError, load_key_file
from sync.changes import latest_hlc
from sync.hlc import HLCError, Timestamp


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
    fix = (f"free space: remove old files in {backup_dir(doc.settings)} (copy them off "
           "first), `journalctl --vacuum-size=100M`, `apt-get clean`; or a bigger disk")
    if usage.free < limits.disk_fail_bytes:
        return Result("disk", FAIL, finding + ": writes will fail soon", fix)
    if usage.free < limits.disk_warn_bytes or fraction < limits.disk_warn_fraction:
        return Result("disk", WARN, finding, fix)
    return Result("disk", PASS, finding)


# -- time ---------------------------------------------------------------------------------


def check_clock(doc: Doctor) -> Result:
    """Not behind the newest stored HLC; skew against HQ when the node has heard HQ's time."""
    if doc.db is None:
        return Result("clock", SKIP, "database unreadable (see database)")
    now = doc.now()
    newest = latest_hlc(doc.db.conn)
    if newest:
        stored = dt.datetime.fromtimestamp(Timestamp.parse(newest).wall_ms / 1000, dt.UTC)
        behind = (stored - now).total_seconds()
        if behind > CLOCK_BEHIND_TOLERANCE_S:
            return Result("clock", FAIL, f"system clock ({now:%Y-%m-%d %H:%M:%S} UTC) is "
                          f"{span(behind)} behind the newest stored timestamp",
                          "set the clock right: `timedatectl set-ntp true` (or `date -s` "
                          "offline) and check the RTC battery")
    hq = meta.get(doc.db, meta.HQ_CLOCK_KEY)
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
    finding = f"{'ahead of' if skew > 0 else 'behind'} HQ by {span(skew)}"
    fix = "enable NTP (`timedatectl set-ntp true`) or set the clock from a trusted source"
    if abs(skew) > CLOCK_SKEW_FAIL_S:
        return Result("clock", FAIL, finding, fix)
    if abs(skew) > CLOCK_SKEW_WARN_S:
        return Result("clock", WARN, finding, fix)
    return Result("clock", PASS, finding)



# -- operations: backlog, backup, service -------------------------------------------------
def check_backlog(doc: Doctor) -> Result:
    """Age of the oldest record HQ has not acknowledged."""
    if doc.db is None:
        return Result("backlog", SKIP, "database unreadable (see database)")
    # The doctor has the settings/reader()/now()/timestamp() that sync_status() uses,
    # without a writer thread or migrations.
    status = sync_status(doc)
    count, age = status.count, status.oldest_age_s
    if not count or age is None:
        return Result("backlog", PASS, "nothing unsent")
    finding = (f"{count} records unsent, oldest {span(age)} old (link {status.link}, "
               f"last ack {status.last_ack_at or 'never'})")
    fix = ("bring the link up (see broker) or carry a bundle: "
           "`edge-node sync export --out /media/usb`") if status.enrolled else ENROLL_FIX
    if age > doc.limits.backlog_fail_s:
        return Result("backlog", FAIL, finding, fix)
    if age > doc.limits.backlog_warn_s:
        return Result("backlog", WARN, finding, fix)
    return Result("backlog", PASS, finding)


def check_pii_age(doc: Doctor) -> Result:
    """How long the oldest citizen data was last used, against `retention_days` (+ a margin).

    Citizens named by an application not yet collected are kept by the rule and not
    counted. A WARN means the daily purge is not running, or HQ has not acknowledged.
    """
    name = "pii-age"
    if doc.db is None:
        return Result(name, SKIP, "database unreadable (see database)")
    now, days = doc.now(), doc.settings["retention_days"]
    limit = now - dt.timedelta(days=days, seconds=doc.limits.pii_margin_s)
    held = oldest_pii(doc.db, iso(limit))
    if held.oldest_used_at is None:
        return Result(name, PASS, "no citizen data held (apart from open applications)")
    age = (now - parse_iso(held.oldest_used_at)).total_seconds()
    finding = f"oldest citizen data last used {span(age)} ago ({held.citizens} citizens held)"
    if days == 0:
        return Result(name, PASS, finding + "; retention is off (retention_days = 0)")
    if held.past_cutoff:
        return Result(name, WARN, f"{finding}; {held.past_cutoff} past the {days}-day "
                      "retention", "the purge runs daily in `edge-node serve` (see service) "
                      "and only takes what HQ acknowledged (see backlog); or run "
                      "`edge-node retention run`")
    return Result(name, PASS, f"{finding}; retention {days} days")


def check_backup(doc: Doctor) -> Result:
    """Age of the newest backup file."""
    directory = backup_dir(doc.settings)
    fix = "`edge-node backup` now, and `systemctl enable --now edge-node-backup.timer`"
    files = [p for p in directory.glob("*") if p.is_file() and not p.name.startswith(".")
             and not p.name.endswith((".tmp", ".json"))] if directory.is_dir() else []
    if not files:
        return Result("backup", WARN, f"no backups in {directory}", fix)
    newest = max(files, key=lambda p: p.stat().st_mtime)
    age = doc.now().timestamp() - newest.stat().st_mtime
    finding = f"newest backup {newest.name} is {span(age)} old"
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


