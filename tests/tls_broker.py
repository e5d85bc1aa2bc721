"""A real Mosquitto with TLS, client certificates, CRL and per-node access control, for tests.

The config and the dynamic-security file are what `certs.broker` generates for
production, plus two test-only clients: `test-control` registers identities
made while the broker runs (through the plugin's $CONTROL topic, as an
enrollment followed by a restart would in the field) and `wiretap` may read
every topic, to prove that nothing readable crosses the broker.
"""

from __future__ import annotations

import getpass
import json
import shutil
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from paho.mqtt.enums import CallbackAPIVersion

from certs import files, pki
from certs.broker import BrokerPaths, dynsec_config, mosquitto_conf, node_role
from tests.helpers import exited, wait_for

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
CONTROL = "$CONTROL/dynamic-security/v1"
TEST_ROLES = [
    {"rolename": "test-control", "acls": [
        {"acltype": "publishClientSend", "topic": CONTROL, "allow": True},
        {"acltype": "subscribeLiteral", "topic": f"{CONTROL}/response", "allow": True},
        {"acltype": "publishClientReceive", "topic": f"{CONTROL}/response", "allow": True}]},
    {"rolename": "wiretap", "acls": [
        {"acltype": "subscribePattern", "topic": "#", "allow": True},
        {"acltype": "publishClientReceive", "topic": "#", "allow": True}]},
]


def free_port() -> int:
    """An unused TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def accepts(port: int) -> bool:
    """True when something accepts TCP connections on loopback `port`."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


@dataclass
class Identity:
    """A client's certificate and key files."""

    name: str
    certfile: Path
    keyfile: Path
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


@dataclass
class TLSBroker:
    """Mosquitto on a free port, configured from certs.broker, in `root`."""

    root: Path
    port: int = field(default_factory=free_port)
    hq_port: int = field(default_factory=free_port)  # HQ's listener (workers share a cert)
    process: subprocess.Popen[bytes] | None = None
    revoked: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        """Create the CA, the server certificate, the CRL, ACL and config."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.ca_key, self.ca_cert = pki.create_ca()
        self.cafile = self.root / "ca.pem"
        self.cafile.write_bytes(pki.cert_pem(self.ca_cert))
        server_key = pki.new_key()
        server = pki.issue(self.ca_key, self.ca_cert, pki.make_csr(server_key, "localhost"),
                           server_names=["localhost"])
        self.paths = BrokerPaths(self.cafile, self.root / "server.pem", self.root / "server.key",
                                 self.root / "crl.pem", self.root / "dynamic-security.json",
                                 self.root / "persist")
        self.paths.certfile.write_bytes(pki.cert_pem(server))
        files.write_atomic(self.paths.keyfile, pki.key_pem(server_key))
        self.nodes: set[str] = set()
        self.control = self.identity("test-control")
        assert self.paths.persistence_dir is not None
        self.paths.persistence_dir.mkdir(exist_ok=True)
        self.write_crl()
        self.conf = self.root / "mosquitto.conf"
        self.conf.write_text(mosquitto_conf(self.paths, self.port, bind="127.0.0.1",
                                             run_as=getpass.getuser(), hq_port=self.hq_port))

    def write_crl(self) -> None:
        """(Re)write the CRL with the revoked serials."""
        crl = pki.build_crl(self.ca_key, self.ca_cert, self.revoked)
        from cryptography.hazmat.primitives import serialization
        self.paths.crlfile.write_bytes(crl.public_bytes(serialization.Encoding.PEM))

    def write_dynsec(self) -> None:
        """The production dynamic-security file for `self.nodes`, plus the test clients."""
        config = dynsec_config(self.nodes)
        config["clients"] += [{"username": name, "roles": [{"rolename": name}]}
                              for name in ("test-control", "wiretap")]
        config["roles"] += TEST_ROLES
        self.paths.dynsec_file.write_text(json.dumps(config, indent=2))

    def identity(self, name: str, org: str | None = None) -> Identity:
        """A client certificate with CN=`name` signed by the broker's CA.

        Any name but `hq`, `hq-sign` and the test clients is a node: the broker
        learns it (at once when it is running), as enrollment does in the field.
        """
        key = pki.new_key()
        cert = pki.issue(self.ca_key, self.ca_cert, pki.make_csr(key, name, org))
        certfile, keyfile = self.root / f"{name}.pem", self.root / f"{name}.key"
        certfile.write_bytes(pki.cert_pem(cert))
        files.write_atomic(keyfile, pki.key_pem(key))
        if name not in ("hq", "hq-sign", "test-control", "wiretap") and name not in self.nodes:
            self.nodes.add(name)
            if self.process is not None:
                self._register(name)
        return Identity(name, certfile, keyfile, key, cert)

    def _register(self, node_id: str) -> None:
        """Tell the running broker about a node through the plugin's $CONTROL topic."""
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        done = threading.Event()
        replies: list[bytes] = []
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-control",
                             protocol=mqtt.MQTTv5)
        client.tls_set(ca_certs=str(self.cafile), certfile=str(self.control.certfile),
                       keyfile=str(self.control.keyfile))

        def on_message(c: mqtt.Client, u: object, m: mqtt.MQTTMessage) -> None:
            replies.append(bytes(m.payload))
            done.set()

        def on_subscribe(*args: object) -> None:
            client.publish(CONTROL, json.dumps({"commands": [
                {"command": "createRole", **node_role(node_id)},
                {"command": "createClient", "username": node_id,
                 "roles": [{"rolename": f"node-{node_id}"}]}]}), qos=1)

        def on_connect(*args: object) -> None:
            client.subscribe(f"{CONTROL}/response", qos=1)

        client.on_message, client.on_subscribe = on_message, on_subscribe
        client.on_connect = on_connect
        client.connect("localhost", self.port)
        client.loop_start()
        try:
            assert done.wait(10), "no reply from the dynamic-security plugin"
            errors = [r.get("error") for r in json.loads(replies[0])["responses"]]
            assert all(e in (None, "Role already exists", "Client already exists")
                       for e in errors), replies[0]  # registering twice is harmless
        finally:
            client.loop_stop()
            client.disconnect()

    def revoke(self, ident: Identity) -> None:
        """Add a certificate to the CRL and restart the broker so it reloads it."""
        self.revoked.append(ident.cert.serial_number)
        self.write_crl()
        self.restart()

    def start(self) -> None:
        """Start mosquitto and wait until the port accepts connections."""
        self.write_dynsec()
        log = (self.root / "mosquitto.log").open("ab")
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log,
                                        stderr=subprocess.STDOUT)
        wait_for(lambda: accepts(self.port), 10, f"mosquitto to listen on {self.port}",
                 stop=exited(self.process, "mosquitto"), detail=self.log_tail)

    def stop(self, kill: bool = False) -> None:
        """Stop (SIGTERM, or SIGKILL with kill=True) and wait."""
        if self.process and self.process.poll() is None:
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
            self.process.wait(10)
        self.process = None

    def restart(self, kill: bool = False) -> None:
        """Stop, then start again on the same port with the same persistence."""
        self.stop(kill)
        self.start()

    def log_tail(self) -> str:
        """The last lines mosquitto logged."""
        path = self.root / "mosquitto.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""


def mqtt_session_opens(port: int, cafile: Path, certfile: Path, keyfile: Path,
                       client_id: str = "", within_s: float = 3.0) -> bool:
    """Whether a fresh MQTT 5 session with this certificate opens on localhost:`port`
    within `within_s` (False when TLS or the broker refuses it)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5)
    client.tls_set(ca_certs=str(cafile), certfile=str(certfile), keyfile=str(keyfile))
    try:
        client.connect("localhost", port)
    except OSError:  # ssl.SSLError included
        return False
    client.loop_start()
    try:
        wait_for(client.is_connected, within_s, "an MQTT session", interval=0.05)
        return True
    except AssertionError:
        return False
    finally:
        client.loop_stop()
        client.disconnect()
