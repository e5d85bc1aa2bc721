"""A real Mosquitto with TLS, client certificates, CRL and per-node ACLs, for tests.

The config is exactly what `certs.broker` generates for production.
"""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from certs import pki
from certs.broker import BrokerPaths, acl_text, mosquitto_conf
from tests.helpers import exited, wait_for

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


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
                                 self.root / "crl.pem", self.root / "acl",
                                 self.root / "persist")
        self.paths.certfile.write_bytes(pki.cert_pem(server))
        pki.write_private(self.paths.keyfile, pki.key_pem(server_key))
        self.paths.aclfile.write_text(acl_text())
        assert self.paths.persistence_dir is not None
        self.paths.persistence_dir.mkdir(exist_ok=True)
        self.write_crl()
        self.conf = self.root / "mosquitto.conf"
        self.conf.write_text(mosquitto_conf(self.paths, self.port, bind="127.0.0.1",
                                             run_as=getpass.getuser()))

    def write_crl(self) -> None:
        """(Re)write the CRL with the revoked serials."""
        crl = pki.build_crl(self.ca_key, self.ca_cert, self.revoked)
        from cryptography.hazmat.primitives import serialization
        self.paths.crlfile.write_bytes(crl.public_bytes(serialization.Encoding.PEM))

    def identity(self, name: str, org: str | None = None) -> Identity:
        """A client certificate with CN=`name` signed by the broker's CA."""
        key = pki.new_key()
        cert = pki.issue(self.ca_key, self.ca_cert, pki.make_csr(key, name, org))
        certfile, keyfile = self.root / f"{name}.pem", self.root / f"{name}.key"
        certfile.write_bytes(pki.cert_pem(cert))
        pki.write_private(keyfile, pki.key_pem(key))
        return Identity(name, certfile, keyfile, key, cert)

    def revoke(self, ident: Identity) -> None:
        """Add a certificate to the CRL and restart the broker so it reloads it."""
        self.revoked.append(ident.cert.serial_number)
        self.write_crl()
        self.restart()

    def start(self) -> None:
        """Start mosquitto and wait until the port accepts connections."""
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
