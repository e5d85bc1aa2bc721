"""Enrollment and revocation reach the running broker at once: no restart, nobody else dropped.

A real TLS Mosquitto runs the config `edge-hq broker-config` writes; `edge-hq node sign`
and `edge-hq node revoke` run as the technician runs them.
"""

from __future__ import annotations

import getpass
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner, Result
from paho.mqtt.enums import CallbackAPIVersion

from certs.authority import init_authority
from certs.enroll import make_request
from hq.cli.main import main as hq_cli
from sync import topics
from tests.helpers import wait_for
from tests.tls_broker import MOSQUITTO, free_port, mqtt_session_opens

pytestmark = pytest.mark.broker

REVOKED_WITHIN_S = 10.0  # docs/technician-guide.md, "Revoking a node"


@dataclass
class Fleet:
    """HQ's key directory, its store, and the broker broker-config wrote."""

    root: Path
    keys: Path
    db: str
    port: int
    hq_port: int
    process: subprocess.Popen[bytes] | None = None

    def hq(self, *args: str) -> Result:
        """Run `edge-hq --db … ARGS`."""
        return CliRunner().invoke(hq_cli, ["--db", self.db, *args])

    def start(self) -> None:
        """`mosquitto -c broker/mosquitto.conf`, waiting for both listeners."""
        log = (self.root / "mosquitto.log").open("ab")
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.root / "broker/mosquitto.conf")],
                                        stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: _listening(self.port) and _listening(self.hq_port), 10,
                 "the broker to listen")

    def stop(self) -> None:
        """SIGTERM and wait."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def enroll(self, node_id: str) -> tuple[Result, Path, Path]:
        """A node's request signed with `edge-hq node sign`: the result and its cert/key."""
        sync_dir = self.root / node_id
        sync_dir.mkdir()
        request = sync_dir / "request.json"
        request.write_text(json.dumps(make_request(sync_dir, node_id, "ISB-01")))
        bundle = sync_dir / "bundle.json"
        result = self.hq("node", "sign", str(request), "--center", "ISB-01", "--broker",
                         f"localhost:{self.port}", "--keys", str(self.keys), "--out", str(bundle))
        certfile = sync_dir / "node.pem"
        if bundle.exists():
            certfile.write_text(json.loads(bundle.read_text())["node_cert"])
        return result, certfile, sync_dir / "node.key"


def _listening(port: int) -> bool:
    """Whether something accepts TCP connections on the loopback port."""
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


class Client:
    """A paho client with a certificate, recording disconnects, messages and reason codes."""

    def __init__(self, fleet: Fleet, certfile: Path, keyfile: Path, port: int,
                 client_id: str) -> None:
        """Connect and wait for the session."""
        self.disconnects = 0
        self.messages: list[str] = []
        self.codes: dict[int, int] = {}
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv5)
        self.client.tls_set(ca_certs=str(fleet.keys / "ca.pem"), certfile=str(certfile),
                            keyfile=str(keyfile))
        self.client.on_disconnect = lambda *args: setattr(self, "disconnects",
                                                          self.disconnects + 1)
        self.client.on_message = lambda c, u, m: self.messages.append(m.topic)
        self.client.on_subscribe = lambda c, u, mid, codes, p: self.codes.__setitem__(
            mid, int(codes[0].value))
        self.client.on_publish = lambda c, u, mid, reason, p: self.codes.__setitem__(
            mid, int(reason.value))
        self.client.connect("localhost", port)
        self.client.loop_start()
        wait_for(self.client.is_connected, 10, f"{client_id} to connect")

    def subscribe(self, topic: str) -> int:
        """SUBACK reason code."""
        _, mid = self.client.subscribe(topic, qos=1)
        assert mid is not None
        wait_for(lambda: mid in self.codes, 10, f"SUBACK for {topic}")
        return self.codes[mid]

    def publish(self, topic: str) -> int:
        """PUBACK reason code of a QoS 1 publish."""
        info = self.client.publish(topic, b"probe", qos=1)
        wait_for(lambda: info.mid in self.codes, 10, f"PUBACK for {topic}")
        return self.codes[info.mid]

    def close(self) -> None:
        """Disconnect."""
        self.client.loop_stop()
        self.client.disconnect()


def _refused(fleet: Fleet, certfile: Path, keyfile: Path) -> bool:
    """Whether a fresh connection with this certificate gets no session within 3 s."""
    return not mqtt_session_opens(fleet.port, fleet.keys / "ca.pem", certfile, keyfile)


def _tls_refused(fleet: Fleet, certfile: Path, keyfile: Path) -> bool:
    """Refused, and by the TLS handshake (the broker logs the failed verification)."""
    log = fleet.root / "mosquitto.log"
    return _refused(fleet, certfile, keyfile) and "certificate verify failed" in log.read_text()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """`ca init` and `broker-config` done, the broker running."""
    keys = tmp_path / "keys"
    init_authority(keys, ["localhost"])
    f = Fleet(tmp_path, keys, str(tmp_path / "hq.db"), free_port(), free_port())
    result = f.hq("broker-config", "--keys", str(keys), "--out", str(tmp_path / "broker"),
                  "--port", str(f.port), "--bind", "127.0.0.1", "--hq-port", str(f.hq_port),
                  "--run-as", getpass.getuser())
    assert result.exit_code == 0, result.output
    assert "broker-admin" in result.output  # says what the new identity may do
    f.start()
    yield f
    f.stop()


def _hq(fleet: Fleet) -> Client:
    """HQ's ingest identity on HQ's listener."""
    return Client(fleet, fleet.keys / "hq.pem", fleet.keys / "hq.key", fleet.hq_port, "hq-test")


def test_node_enrolled_while_the_broker_runs_gets_in_without_restart(fleet: Fleet) -> None:
    """`node sign` lets the new node in at once; the running broker is the same process and
    a node already connected is never dropped."""
    _, a_cert, a_key = fleet.enroll("NAAAAA")
    a = Client(fleet, a_cert, a_key, fleet.port, "NAAAAA")
    pid = fleet.process.pid if fleet.process else 0
    try:
        result, b_cert, b_key = fleet.enroll("NBBBBB")
        assert result.exit_code == 0, result.output
        assert "lets the node in now" in result.output
        b = Client(fleet, b_cert, b_key, fleet.port, "NBBBBB")
        try:
            assert b.subscribe(topics.down("NBBBBB")) < 0x80
            assert b.publish(topics.up("NBBBBB")) < 0x80
            assert b.subscribe(topics.down("NAAAAA")) == 0x87  # still only its own topics
        finally:
            b.close()
        assert a.disconnects == 0 and a.client.is_connected()
        assert fleet.process is not None and fleet.process.pid == pid
        assert fleet.process.poll() is None
    finally:
        a.close()


def test_revoked_node_is_cut_off_within_seconds_and_others_stay(fleet: Fleet) -> None:
    """`node revoke` disconnects the node before it returns (at most REVOKED_WITHIN_S), every
    later publish, subscription and delivery of it is refused, the other node is never
    dropped; after `systemctl reload mosquitto` (SIGHUP) the TLS handshake refuses it too."""
    _, a_cert, a_key = fleet.enroll("NAAAAA")
    _, b_cert, b_key = fleet.enroll("NBBBBB")
    fleet.stop()  # both in the broker's files: only the revocation is on trial here
    fleet.start()
    a = Client(fleet, a_cert, a_key, fleet.port, "NAAAAA")
    b = Client(fleet, b_cert, b_key, fleet.port, "NBBBBB")
    hq = _hq(fleet)
    try:
        assert a.subscribe(topics.down("NAAAAA")) < 0x80
        assert b.subscribe(topics.down("NBBBBB")) < 0x80
        started = time.monotonic()
        result = fleet.hq("node", "revoke", "NAAAAA", "--keys", str(fleet.keys))
        assert result.exit_code == 0, result.output
        assert "disconnected the node" in result.output
        wait_for(lambda: a.disconnects >= 1, REVOKED_WITHIN_S, "the revoked node to be dropped")
        elapsed = time.monotonic() - started
        assert elapsed < REVOKED_WITHIN_S, elapsed
        print(f"revoked node dropped {elapsed:.2f} s after `node revoke` started")
        wait_for(a.client.is_connected, 10, "paho to reconnect the revoked node")
        assert a.publish(topics.up("NAAAAA")) == 0x87
        assert a.subscribe(topics.down("NAAAAA")) == 0x87
        hq.publish(topics.down("NAAAAA"))
        hq.publish(topics.down("NBBBBB"))
        wait_for(lambda: topics.down("NBBBBB") in b.messages, 10, "B's down message")
        time.sleep(0.5)
        assert a.messages == []  # not even through the subscription its session kept
        assert b.publish(topics.up("NBBBBB")) < 0x80
        assert fleet.process is not None
        os.kill(fleet.process.pid, signal.SIGHUP)  # `systemctl reload mosquitto`
        assert "certificate verify failed" not in (fleet.root / "mosquitto.log").read_text()
        wait_for(lambda: _tls_refused(fleet, a_cert, a_key), 10, "the CRL to be reloaded")
        time.sleep(0.5)
        assert b.disconnects == 0 and b.client.is_connected()
        assert b.publish(topics.up("NBBBBB")) < 0x80
    finally:
        for client in (a, b, hq):
            client.close()


def test_revoke_with_the_broker_down_says_to_restart(fleet: Fleet) -> None:
    """The broker cannot be reached: the revocation stands at HQ and in the broker's files,
    the command says so, names the fallback and exits 3; a later start refuses the node."""
    _, a_cert, a_key = fleet.enroll("NAAAAA")
    fleet.stop()
    result = fleet.hq("node", "revoke", "NAAAAA", "--keys", str(fleet.keys))
    assert result.exit_code == 3, result.output
    assert "revoked NAAAAA" in result.output
    assert "was not changed" in result.output and "restart the broker" in result.output
    dynsec: dict[str, Any] = json.loads((fleet.root / "broker/dynamic-security.json").read_text())
    assert "NAAAAA" not in [c["username"] for c in dynsec["clients"]]
    signed, b_cert, b_key = fleet.enroll("NBBBBB")  # enrollment itself succeeds: exit 0
    assert signed.exit_code == 0 and "restart the broker" in signed.output, signed.output
    fleet.start()
    assert _tls_refused(fleet, a_cert, a_key)
    b = Client(fleet, b_cert, b_key, fleet.port, "NBBBBB")
    try:
        assert b.subscribe(topics.down("NBBBBB")) < 0x80
    finally:
        b.close()


def test_broker_admin_may_only_use_the_control_topic(fleet: Fleet) -> None:
    """broker-admin, the CLI's identity, reads and writes no fleet topic."""
    admin = Client(fleet, fleet.keys / "broker-admin.pem", fleet.keys / "broker-admin.key",
                   fleet.hq_port, "broker-admin-test")
    try:
        assert admin.subscribe(topics.HQ_UP_SUBSCRIPTION) == 0x87
        assert admin.subscribe(topics.down("NAAAAA")) == 0x87
        assert admin.publish(topics.down("NAAAAA")) == 0x87
        assert admin.subscribe("$CONTROL/dynamic-security/v1/response") < 0x80
    finally:
        admin.close()
