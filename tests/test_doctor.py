"""`edge-node doctor`: each check's PASS and WARN/FAIL paths, output shape and exit codes."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certs import files, pki
from edge_node.cli.main import main
from edge_node.config import SETTINGS_BY_NAME, Settings
from edge_node.node import Node
from edge_node.ops import checkup, node_checks
from edge_node.ops import doctor as doc_mod
from edge_node.ops.doctor import FAIL, PASS, SKIP, WARN, Doctor, Result, Thresholds, run_checks
from edge_node.store import meta
from tests.tls_broker import TLSBroker, free_port

NODE_DAYS = 90
CA = tuple[ec.EllipticCurvePrivateKey, x509.Certificate]


def check(settings: Settings, name: str, **options: Any) -> Result:
    """Run every check (as the CLI does) and return the one called `name`."""
    options.setdefault("systemctl", None)
    results = {r.check: r for r in run_checks(settings, **options)}
    return results[name]


def utc(**delta: float) -> dt.datetime:
    """Now, shifted by a timedelta given as keywords."""
    return dt.datetime.now(dt.UTC) + dt.timedelta(**delta)


@pytest.fixture
def ca() -> CA:
    """A fleet CA."""
    return pki.create_ca()


def enroll(settings: Settings, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate,
           *, port: int = 1, not_before: dt.datetime | None = None, days: int = NODE_DAYS,
           trust: x509.Certificate | None = None, host: str = "localhost") -> Path:
    """Write the sync files the doctor reads: node key/cert, CA, broker address."""
    directory = Path(settings["data_dir"]) / "sync"
    directory.mkdir(mode=0o700, exist_ok=True)
    key = pki.new_key()
    cert = pki.issue(ca_key, ca_cert, pki.make_csr(key, "NDOCTOR"), days=days,
                     not_before=not_before)
    files.write_atomic(directory / "node.key", pki.key_pem(key))
    (directory / "node.pem").write_bytes(pki.cert_pem(cert))
    (directory / "ca.pem").write_bytes(pki.cert_pem(trust or ca_cert))
    (directory / "broker.json").write_text(json.dumps({"host": host, "port": port}))
    return directory


# -- key file, encryption, database ------------------------------------------------------
def test_key_file_pass_and_wrong_permissions(settings: Settings) -> None:
    """0600 passes; group/other bits fail with the chmod fix."""
    assert check(settings, "key-file").status == PASS
    key = Path(settings["data_dir"]) / "node.key"
    key.chmod(0o640)
    result = check(settings, "key-file")
    assert result.status == FAIL
    assert "0640" in result.finding and f"chmod 600 {key}" in result.fix


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_key_file_wrong_owner(settings: Settings) -> None:
    """A key owned by someone other than the node's account or root fails."""
    key = Path(settings["data_dir"]) / "node.key"
    os.chown(key, 4321, 4321)
    result = check(settings, "key-file")
    assert result.status == FAIL and "belongs to 4321" in result.finding
    assert result.fix.startswith("chown ")


def test_missing_key_file_fails(settings: Settings, monkeypatch: pytest.MonkeyPatch,
                                tmp_path: Path) -> None:
    """No key file (and no sealed credential): FAIL naming the path."""
    monkeypatch.setattr(node_checks, "CREDSTORE_KEY", tmp_path / "none")
    (Path(settings["data_dir"]) / "node.key").unlink()
    assert check(settings, "key-file").status == FAIL
    assert check(settings, "database").status == FAIL


def test_sealed_key_is_a_warning_with_the_sandbox_command(
        settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """When the key is a systemd credential, the fix is the systemd-run command."""
    sealed = tmp_path / "edge-node-key"
    sealed.write_bytes(b"sealed")
    monkeypatch.setattr(node_checks, "CREDSTORE_KEY", sealed)
    (Path(settings["data_dir"]) / "node.key").unlink()
    result = check(settings, "key-file")
    assert result.status == WARN and "systemd-run" in result.fix


def test_database_pass_then_tampered_file_fails(settings: Settings) -> None:
    """Flipping bytes inside an encrypted page is caught (HMAC / integrity check)."""
    assert check(settings, "database").status == PASS
    assert check(settings, "encryption").status == PASS
    path = Path(settings["data_dir"]) / "node.db"
    data = bytearray(path.read_bytes())
    page = 4096 * 3 + 100  # inside the fourth page, away from the header
    data[page:page + 16] = bytes(b ^ 0xFF for b in data[page:page + 16])
    path.write_bytes(bytes(data))
    result = check(settings, "database")
    assert result.status == FAIL and "restore" in result.fix
    assert check(settings, "backlog").status == SKIP  # nothing else reads a bad database
    assert check(settings, "pii-age").status == SKIP


def test_plaintext_database_fails_encryption(settings: Settings) -> None:
    """A plaintext SQLite file where an encrypted one is expected."""
    path = Path(settings["data_dir"]) / "node.db"
    for side in path.parent.glob("node.db-*"):
        side.unlink()
    path.write_bytes(b"SQLite format 3\x00" + bytes(4096))
    assert check(settings, "encryption").status == FAIL
    assert check(settings, "database").status == FAIL


def test_unencrypted_development_database_warns(settings: Settings) -> None:
    """encrypt_db = false is a warning: development only."""
    assert check({**settings, "encrypt_db": False}, "encryption").status == WARN


# -- disk -----------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs (root), skipped where mounting is impossible."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
                          capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root?); the thresholds test covers it")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_full_disk_fails(settings: Settings, small_disk: Path) -> None:
    """A real tiny filesystem: less than 100 MiB free is a failure."""
    data_dir = small_disk / "node"
    shutil.copytree(settings["data_dir"], data_dir)
    result = check({**settings, "data_dir": str(data_dir)}, "disk")
    assert result.status == FAIL and "MiB free" in result.finding


def test_disk_thresholds_from_settings(settings: Settings) -> None:
    """The same verdicts through the doctor_disk_* settings (no mount needed)."""
    assert check(settings, "disk", thresholds=Thresholds(
        disk_warn_bytes=1, disk_warn_fraction=0, disk_fail_bytes=0)).status == PASS
    huge = 1 << 30  # MiB: more than any disk
    assert check({**settings, "doctor_disk_warn_mib": huge}, "disk").status == WARN
    assert check({**settings, "doctor_disk_fail_mib": huge}, "disk").status == FAIL
    assert check({**settings, "doctor_disk_warn_percent": 101}, "disk").status == WARN


def test_doctor_settings_default_to_the_named_constants() -> None:
    """config.py repeats the doctor's constants as defaults; they must agree."""
    assert SETTINGS_BY_NAME["doctor_disk_warn_mib"].default == checkup.DISK_WARN_MIB
    assert SETTINGS_BY_NAME["doctor_disk_warn_percent"].default == checkup.DISK_WARN_PERCENT
    assert SETTINGS_BY_NAME["doctor_disk_fail_mib"].default == checkup.DISK_FAIL_MIB
    assert SETTINGS_BY_NAME["doctor_broker_timeout_seconds"].default == \
        checkup.BROKER_TIMEOUT_S


# -- clock ----------------------------------------------------------------------------------
def _write_something(settings: Settings) -> None:
    """One outbox record (a staff account) stamped with the current HLC."""
    from edge_node.domain.staff import create_staff

    node = Node(settings)
    try:
        node.write(lambda db: create_staff(db, "clockcheck", "Clock Check", "operator",
                                           "a-long-password", node.timestamp()))
    finally:
        node.close()


def test_clock_behind_the_newest_stored_hlc_fails(settings: Settings) -> None:
    """A system clock an hour before the newest stored timestamp: FAIL."""
    _write_something(settings)
    assert check(settings, "clock").status == WARN  # fine, but skew against HQ unknown
    result = check(settings, "clock", now=lambda: utc(hours=-1))
    assert result.status == FAIL and "behind the newest stored timestamp" in result.finding


@pytest.mark.parametrize(("skew_s", "status"), [(5, PASS), (600, WARN), (7200, FAIL)])
def test_clock_skew_against_hq(settings: Settings, skew_s: float, status: str) -> None:
    """When HQ's time was recorded, the skew decides."""
    from edge_node.ids import iso

    hq = utc(seconds=-skew_s)
    stamp = f"{int(hq.timestamp() * 1000):015d}-00000-hq"
    node = Node(settings)
    node.write(lambda db: meta.put(db, meta.HQ_CLOCK_KEY, f"{stamp} {iso(utc())}"))
    node.close()
    assert check(settings, "clock").status == status


# -- certificate, CRL, broker ---------------------------------------------------------------
def test_not_enrolled_reports_enrollment_checks_as_warnings(settings: Settings) -> None:
    """Certificate, CRL and broker: WARN "not enrolled" with the enroll command as the fix."""
    for name in ("certificate", "crl", "broker"):
        result = check(settings, name)
        assert result.status == WARN and "not enrolled" in result.finding
        assert "edge-node enroll request" in result.fix


def test_certificate_pass(settings: Settings, ca: CA) -> None:
    """A fresh certificate from the CA in the sync directory passes."""
    enroll(settings, *ca)
    result = check(settings, "certificate")
    assert result.status == PASS and "valid until" in result.finding


def test_expired_certificate_fails(settings: Settings, ca: CA) -> None:
    """Issued ten days ago for one day: expired."""
    enroll(settings, *ca, not_before=utc(days=-10), days=1)
    result = check(settings, "certificate")
    assert result.status == FAIL and "expired" in result.finding


def test_certificate_in_its_last_third_warns(settings: Settings, ca: CA) -> None:
    """70 of 90 days used: renewal due."""
    enroll(settings, *ca, not_before=utc(days=-70), days=90)
    result = check(settings, "certificate")
    assert result.status == WARN and "renewal due" in result.finding


def test_certificate_from_a_wrong_ca_fails(settings: Settings, ca: CA) -> None:
    """The sync directory's CA did not sign the node certificate."""
    _, other = pki.create_ca("Someone else's CA")
    enroll(settings, *ca, trust=other)
    result = check(settings, "certificate")
    assert result.status == FAIL and "not issued by the CA" in result.finding


def _write_crl(directory: Path, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate,
               revoked: list[int], days: float) -> None:
    """A CRL in the sync directory, valid for `days` from now (negative: long expired)."""
    now = utc()
    crl = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
           .last_update(now - dt.timedelta(days=40)).next_update(now + dt.timedelta(days=days)))
    for serial in revoked:
        crl = crl.add_revoked_certificate(x509.RevokedCertificateBuilder()
                                          .serial_number(serial).revocation_date(now).build())
    signed = crl.sign(ca_key, hashes.SHA256())
    (directory / "crl.pem").write_bytes(signed.public_bytes(serialization.Encoding.PEM))


def test_crl_paths(settings: Settings, ca: CA) -> None:
    """No CRL: SKIP; fresh: PASS; nextUpdate passed: FAIL; our serial listed: FAIL."""
    directory = enroll(settings, *ca)
    assert check(settings, "crl").status == SKIP
    _write_crl(directory, *ca, [], days=20)
    assert check(settings, "crl").status == PASS
    _write_crl(directory, *ca, [], days=-1)
    result = check(settings, "crl")
    assert result.status == FAIL and "nextUpdate passed" in result.finding
    serial = x509.load_pem_x509_certificate((directory / "node.pem").read_bytes()).serial_number
    _write_crl(directory, *ca, [serial], days=20)
    assert "revoked" in check(settings, "crl").finding


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[TLSBroker]:
    """A real Mosquitto with TLS and client certificates."""
    started = TLSBroker(tmp_path / "broker")
    started.start()
    yield started
    started.stop()


def test_broker_reachable_with_the_node_certificate(settings: Settings,
                                                    broker: TLSBroker) -> None:
    """TLS handshake accepted by the real broker."""
    enroll(settings, broker.ca_key, broker.ca_cert, port=broker.port)
    result = check(settings, "broker")
    assert result.status == PASS, result.line()
    assert "TLS handshake accepted" in result.finding


def test_broker_refuses_a_certificate_from_another_ca(settings: Settings,
                                                      broker: TLSBroker, ca: CA) -> None:
    """Our client certificate is from a CA the broker does not trust: FAIL."""
    enroll(settings, *ca, port=broker.port, trust=broker.ca_cert)
    result = check(settings, "broker")
    assert result.status == FAIL, result.line()


def test_broker_address_the_broker_certificate_does_not_name(settings: Settings,
                                                             broker: TLSBroker) -> None:
    """broker.json says 127.0.0.1, the certificate names localhost: FAIL with the real fix.

    The node's certificate is fine, so "re-enroll" with the same address would fail again;
    the fix names the certificate's names and the two ways out.
    """
    enroll(settings, broker.ca_key, broker.ca_cert, port=broker.port, host="127.0.0.1")
    result = check(settings, "broker")
    assert result.status == FAIL, result.line()
    assert "valid for localhost, not 127.0.0.1" in result.finding
    assert f"--broker localhost:{broker.port}" in result.fix
    assert "re-issue the broker certificate with 127.0.0.1" in result.fix
    assert "re-enroll" not in result.fix


def test_broker_unreachable_is_only_a_warning(settings: Settings, ca: CA) -> None:
    """Nothing listens: WARN (the node works offline), quickly."""
    enroll(settings, *ca, port=free_port())
    started = time.monotonic()
    result = check({**settings, "doctor_broker_timeout_seconds": 2}, "broker")
    assert result.status == WARN and "unreachable" in result.finding
    assert "sync export" in result.fix
    assert time.monotonic() - started < 10


# -- backlog, backup, service ---------------------------------------------------------------
def test_backlog_age(settings: Settings) -> None:
    """A fresh record passes; seen from two (eight) days later it warns (fails)."""
    _write_something(settings)
    assert check(settings, "backlog").status == PASS
    result = check(settings, "backlog", now=lambda: utc(days=2))
    assert result.status == WARN and "records unsent" in result.finding
    assert check(settings, "backlog", now=lambda: utc(days=8)).status == FAIL


def test_backup_age(settings: Settings) -> None:
    """None: WARN; fresh: PASS; three days old: WARN."""
    assert check(settings, "backup").status == WARN
    backups = Path(settings["data_dir"]) / "backups"
    backups.mkdir()
    copy = backups / "node-20260301T000000-1.db"
    copy.write_bytes(b"x")
    assert check(settings, "backup").status == PASS
    old = time.time() - 3 * 86400
    os.utime(copy, (old, old))
    assert check(settings, "backup").status == WARN


@pytest.mark.parametrize(("state", "status"), [("active", PASS), ("inactive", WARN),
                                               ("failed", FAIL)])
def test_service_state(settings: Settings, state: str, status: str) -> None:
    """systemctl is-active decides where systemd runs; SKIP elsewhere."""
    calls: list[list[str]] = []

    def systemctl(args: list[str]) -> str:
        calls.append(args)
        return state

    result = check(settings, "service", systemctl=systemctl, systemd_running=True)
    assert result.status == status and calls == [["is-active", "edge-node"]]
    assert check(settings, "service", systemd_running=False).status == SKIP


def test_a_crashing_check_is_a_fail_line(settings: Settings,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in one check never hides the others."""
    def broken(doc: Doctor) -> Result:
        raise RuntimeError("boom")

    monkeypatch.setattr(doc_mod, "CHECKS", (("disk", broken), *doc_mod.CHECKS[4:]))
    result = check(settings, "disk")
    assert result.status == FAIL and "boom" in result.finding


# -- the command ----------------------------------------------------------------------------
def _cli(settings: Settings, *args: str, env: dict[str, str] | None = None) -> Any:
    """Run `edge-node --data-dir D doctor ARGS` (systemd detection off)."""
    return CliRunner().invoke(main, ["--data-dir", settings["data_dir"], "doctor", *args],
                              env={"EDGE_NODE_DOCTOR_BROKER_TIMEOUT_SECONDS": "1", **(env or {})})


def test_text_output_and_exit_codes(settings: Settings, ca: CA) -> None:
    """One line per check; exit 1 on the worst WARN, 2 once something fails."""
    result = _cli(settings)
    lines = result.output.splitlines()
    assert len(lines) == len(doc_mod.CHECKS)
    assert all(line.split(" ", 1)[0] in (PASS, WARN, FAIL, SKIP) for line in lines)
    assert any(" — fix: " in line for line in lines if line.startswith(WARN))
    assert result.exit_code == 1  # not enrolled, no backup
    (Path(settings["data_dir"]) / "node.key").chmod(0o644)
    assert _cli(settings).exit_code == 2


def test_exit_code_zero_when_everything_passes(settings: Settings,
                                               broker: TLSBroker) -> None:
    """An enrolled node with a fresh backup, HQ time known and a reachable broker."""
    from edge_node.ids import iso

    enroll(settings, broker.ca_key, broker.ca_cert, port=broker.port)
    backups = Path(settings["data_dir"]) / "backups"
    backups.mkdir()
    (backups / "node-1.db").write_bytes(b"x")
    node = Node(settings)
    stamp = f"{int(time.time() * 1000):015d}-00000-hq"
    node.write(lambda db: meta.put(db, meta.HQ_CLOCK_KEY, f"{stamp} {iso(utc())}"))
    node.close()
    results = run_checks(settings, systemctl=None, systemd_running=False)
    assert [r.line() for r in results if r.status not in (PASS, SKIP)] == []


def test_json_output_shape(settings: Settings) -> None:
    """--json: status, exit_code and one object per check with four string fields."""
    result = _cli(settings, "--json")
    body = json.loads(result.output)
    assert set(body) == {"status", "exit_code", "checks"}
    assert body["status"] == WARN and body["exit_code"] == result.exit_code == 1
    assert [c["check"] for c in body["checks"]] == [name for name, _ in doc_mod.CHECKS]
    for item in body["checks"]:
        assert set(item) == {"check", "status", "finding", "fix"}
        assert all(isinstance(v, str) for v in item.values())
