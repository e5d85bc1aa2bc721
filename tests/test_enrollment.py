"""Enrollment and revocation through the CLIs, including every refusal path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from certs.authority import init_authority
from certs.enroll import fingerprint
from edge_node.cli.main import main as node_cli
from hq.cli.main import main as hq_cli


@pytest.fixture
def fleet(tmp_path: Path) -> dict[str, Any]:
    """An HQ key directory, an initialised node and its enrollment request."""
    runner = CliRunner()
    keys, db = tmp_path / "keys", str(tmp_path / "hq.db")
    auth = init_authority(keys, ["localhost"])
    data = str(tmp_path / "node")
    created = runner.invoke(node_cli, ["--data-dir", data, "init", "--center-id", "ISB-01"])
    assert created.exit_code == 0
    request = tmp_path / "req.json"
    result = runner.invoke(node_cli, ["--data-dir", data, "enroll", "request", "--out",
                                      str(request)])
    assert result.exit_code == 0, result.output
    return {"runner": runner, "keys": str(keys), "db": db, "data": data, "request": request,
            "fp": fingerprint(auth.ca_cert), "tmp": tmp_path}


def sign(f: dict[str, Any], center: str = "ISB-01", broker: str = "localhost:8883") -> Any:
    """Run `edge-hq node sign`."""
    return f["runner"].invoke(hq_cli, ["--db", f["db"], "node", "sign", str(f["request"]),
                                       "--center", center, "--broker", broker,
                                       "--keys", f["keys"], "--out",
                                       str(f["tmp"] / "bundle.json")])


def install(f: dict[str, Any], fp: str | None = None) -> Any:
    """Run `edge-node enroll install`."""
    return f["runner"].invoke(node_cli, ["--data-dir", f["data"], "enroll", "install",
                                         str(f["tmp"] / "bundle.json"), "--ca-fingerprint",
                                         fp or f["fp"]])


def test_enroll_round_trip(fleet: dict[str, Any]) -> None:
    """Sign, install: the node's sync directory holds its certificate."""
    assert sign(fleet).exit_code == 0
    result = install(fleet)
    assert result.exit_code == 0, result.output
    assert "enrolled: node" in result.output
    assert (Path(fleet["data"]) / "sync" / "node.pem").exists()


def test_bundle_carries_the_fleet_key_sealed_and_the_node_keeps_it(
        fleet: dict[str, Any]) -> None:
    """The bundle holds HQ's fleet index key sealed to the node's HPKE key (the key itself
    appears nowhere in the file); install opens it into sync/fleet.key (0600), and a
    citizen registered before enrollment is re-indexed under it, as HQ computes it."""
    import stat

    from edge_node.config import load_settings
    from edge_node.domain import citizens
    from edge_node.node import Node
    from hq import pii as hq_pii
    from hq.store import HQDatabase
    from sync.pii import fleet_index

    settings = load_settings(fleet["data"], environ={})
    node = Node(settings)
    try:
        node.write(lambda db: citizens.register(
            db, node.keys, cnic="35202-1234567-1", name="Ayesha", phone=None,
            id_kind="cnic", actor={"id": "s1", "role": "reception"}, now=node.timestamp()))
    finally:
        node.close()
    assert sign(fleet).exit_code == 0
    db = HQDatabase(fleet["db"])
    current = hq_pii.current_fleet(db)
    db.close()
    assert current is not None
    text = (fleet["tmp"] / "bundle.json").read_text()
    assert json.loads(text)["fleet_key"]["version"] == current[0]
    assert current[1].hex() not in text
    result = install(fleet)
    assert result.exit_code == 0, result.output
    assert "fleet index key version 1 installed; 1 citizens re-indexed" in result.output
    key_file = Path(fleet["data"]) / "sync" / "fleet.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    node = Node(settings)
    try:
        assert node.keys.fleet == ((current[0], current[1]),)
        assert node.reader().execute("SELECT cnic_index FROM citizens").fetchone()[0] == \
            fleet_index(*current, "35202-1234567-1")
    finally:
        node.close()


def test_request_for_another_center_is_refused(fleet: dict[str, Any]) -> None:
    """HQ signs only for the center the request names."""
    result = sign(fleet, center="LHR-02")
    assert result.exit_code == 1 and "not LHR-02" in result.output


@pytest.mark.parametrize("node_id", ["hq", "hq-sign", "broker", "broker-admin", "HQ",
                                     "Broker-Admin", "+", "N/A", "#"])
def test_node_ids_of_hq_and_wildcards_are_refused(fleet: dict[str, Any],
                                                  node_id: str) -> None:
    """A request naming one of HQ's identities (any case) or a topic wildcard is refused:
    nothing signed, nothing registered, no bundle."""
    from certs.enroll import make_request
    from hq.store import HQDatabase

    sync_dir = fleet["tmp"] / "rogue"
    sync_dir.mkdir()
    fleet["request"].write_text(json.dumps(make_request(sync_dir, node_id, "ISB-01")))
    result = sign(fleet)
    assert result.exit_code == 1, result.output
    assert ("reserved for HQ" if node_id.isalpha() or "-" in node_id else "not allowed") \
        in result.output
    assert "Traceback" not in result.output
    assert not (fleet["tmp"] / "bundle.json").exists()
    db = HQDatabase(fleet["db"])
    try:
        assert db.execute("SELECT COUNT(*) FROM hq_nodes").fetchone()[0] == 0
    finally:
        db.close()


@pytest.mark.parametrize("broker", ["127.0.0.1:8883", "mqtt.hq.example:8883",
                                    "evil.localhost:8883"])
def test_broker_host_the_broker_certificate_does_not_name_is_refused(
        fleet: dict[str, Any], broker: str) -> None:
    """The broker certificate names only localhost: a bundle for another host is not written.

    The node checks the broker's certificate against the bundle's host, so such a node could
    never connect; HQ registers nothing and says which names would work.
    """
    from hq.store import HQDatabase

    result = sign(fleet, broker=broker)
    assert result.exit_code == 1, result.output
    assert "valid for localhost" in result.output and "--broker localhost:8883" in result.output
    assert "re-issue the broker certificate" in result.output
    assert not (fleet["tmp"] / "bundle.json").exists()
    db = HQDatabase(fleet["db"])
    assert db.execute("SELECT count(*) FROM hq_nodes").fetchone()[0] == 0
    db.close()


def test_names_host_follows_tls_hostname_rules() -> None:
    """IP addresses match IP entries only; `*.` covers exactly one label; case is ignored."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    from certs import pki
    from certs.hostnames import names_host, server_names

    key = pki.new_key()
    ca_key, ca_cert = pki.create_ca()
    cert = (x509.CertificateBuilder().subject_name(ca_cert.subject)
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(1).not_valid_before(ca_cert.not_valid_before_utc)
            .not_valid_after(ca_cert.not_valid_after_utc)
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("mqtt.hq.example"), x509.DNSName("*.brokers.example"),
                x509.IPAddress(ipaddress.ip_address("10.0.0.5"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    assert server_names(cert) == ["mqtt.hq.example", "*.brokers.example", "10.0.0.5"]
    for host in ("mqtt.hq.example", "MQTT.HQ.example", "a.brokers.example", "10.0.0.5"):
        assert names_host(cert, host), host
    for host in ("hq.example", "brokers.example", "a.b.brokers.example", "10.0.0.6",
                 "127.0.0.1", "localhost"):
        assert not names_host(cert, host), host
    assert not names_host(ca_cert, "localhost")  # no subjectAltName: names nothing


def test_wrong_ca_fingerprint_is_refused(fleet: dict[str, Any]) -> None:
    """A bundle from a CA other than the one HQ named installs nothing."""
    sign(fleet)
    result = install(fleet, fp="AA:" * 31 + "AA")
    assert result.exit_code == 1 and "fingerprint" in result.output
    assert not (Path(fleet["data"]) / "sync" / "node.pem").exists()


@pytest.mark.parametrize("field", ["broker", "node_id", "hq_hpke_public", "signature"])
def test_tampered_bundle_is_refused(fleet: dict[str, Any], field: str) -> None:
    """Any edit to the bundle breaks HQ's signature (or the node check)."""
    sign(fleet)
    path = fleet["tmp"] / "bundle.json"
    bundle = json.loads(path.read_text())
    tampered = {"broker": {"host": "evil.example", "port": 8883}, "node_id": "NEVIL",
                "hq_hpke_public": bundle["hq_hpke_public"].replace("A", "B", 1),
                "signature": "AAAA" + bundle["signature"][4:]}[field]
    bundle[field] = tampered
    path.write_text(json.dumps(bundle))
    result = install(fleet)
    assert result.exit_code == 1 and "bundle refused" in result.output, result.output
    assert "Traceback" not in result.output
    assert not (Path(fleet["data"]) / "sync" / "node.pem").exists()


def test_bundle_for_another_node_is_refused(fleet: dict[str, Any], tmp_path: Path) -> None:
    """Another node's bundle does not carry this node's key."""
    sign(fleet)
    other = str(tmp_path / "other")
    runner = fleet["runner"]
    runner.invoke(node_cli, ["--data-dir", other, "init", "--center-id", "ISB-01"])
    runner.invoke(node_cli, ["--data-dir", other, "enroll", "request", "--out",
                             str(tmp_path / "o.json")])
    result = runner.invoke(node_cli, ["--data-dir", other, "enroll", "install",
                                      str(tmp_path / "bundle.json"), "--ca-fingerprint",
                                      fleet["fp"]])
    assert result.exit_code == 1 and "another node" in result.output


def test_revoke_updates_crl_and_tells_the_fleet(fleet: dict[str, Any]) -> None:
    """`edge-hq node revoke`: the CRL lists the serial, ingest refuses, the fleet is told."""
    from cryptography import x509

    from hq.store import HQDatabase

    sign(fleet)
    node_id = json.loads((fleet["tmp"] / "bundle.json").read_text())["node_id"]
    result = fleet["runner"].invoke(hq_cli, ["--db", fleet["db"], "node", "revoke", node_id,
                                             "--keys", fleet["keys"]])
    assert result.exit_code == 0, result.output
    crl = x509.load_pem_x509_crl((Path(fleet["keys"]) / "crl.pem").read_bytes())
    assert len(list(crl)) == 1
    db = HQDatabase(fleet["db"])
    assert db.execute("SELECT revoked FROM hq_nodes").fetchone()[0] == 1
    assert db.execute("SELECT kind FROM hq_down").fetchall() == []  # revoked node not told
    db.close()
    unknown = fleet["runner"].invoke(hq_cli, ["--db", fleet["db"], "node", "revoke", "NOPE",
                                              "--keys", fleet["keys"]])
    assert unknown.exit_code == 1 and "unknown node" in unknown.output


def test_ca_init_refuses_to_overwrite(fleet: dict[str, Any]) -> None:
    """A second `ca init` would orphan every node: refused."""
    result = fleet["runner"].invoke(hq_cli, ["ca", "init", "--keys", fleet["keys"]])
    assert result.exit_code == 1 and "exists already" in result.output


def _listening(port: int) -> bool:
    """Whether something accepts TCP connections on the loopback port."""
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def _connects(port: int, keys: Path, name: str) -> bool:
    """Whether the broker completes an MQTT session for HQ's `name` certificate."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from tests.helpers import wait_for

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name,
                         protocol=mqtt.MQTTv5)
    client.tls_set(ca_certs=str(keys / "ca.pem"), certfile=str(keys / f"{name}.pem"),
                   keyfile=str(keys / f"{name}.key"))
    try:
        client.connect("localhost", port)
        client.loop_start()
        wait_for(client.is_connected, 5, f"{name} to connect")
        return True
    except (AssertionError, OSError):
        return False
    finally:
        client.loop_stop()
        client.disconnect()


@pytest.mark.broker
def test_hq_signing_certificate_cannot_open_a_broker_session(fleet: dict[str, Any]) -> None:
    """hq-sign carries only documentSigning: the real TLS broker refuses it; hq connects."""
    import getpass
    import subprocess

    from tests.tls_broker import MOSQUITTO, free_port

    keys, out = Path(fleet["keys"]), fleet["tmp"] / "broker"
    port, hq_port = free_port(), free_port()
    result = fleet["runner"].invoke(hq_cli, [
        "--db", fleet["db"], "broker-config", "--keys", str(keys), "--out", str(out),
        "--port", str(port), "--bind", "127.0.0.1", "--hq-port", str(hq_port),
        "--run-as", getpass.getuser()])
    assert result.exit_code == 0, result.output
    log = (fleet["tmp"] / "mosquitto.log").open("wb")
    broker = subprocess.Popen([MOSQUITTO, "-c", str(out / "mosquitto.conf")], stdout=log,
                              stderr=subprocess.STDOUT)
    try:
        from tests.helpers import wait_for
        wait_for(lambda: _listening(hq_port) and _listening(port), 10, "the broker to listen")
        assert _connects(hq_port, keys, "hq")
        assert not _connects(hq_port, keys, "hq-sign")
        assert not _connects(port, keys, "hq-sign")
    finally:
        broker.terminate()
        broker.wait(10)
        log.close()
