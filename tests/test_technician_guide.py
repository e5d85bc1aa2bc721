"""docs/technician-guide.md, run for real: zero to an enrolled, syncing node."""

from __future__ import annotations

import json
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import console_script, wait_for
from tests.tls_broker import free_port, mqtt_session_opens

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "technician-guide.md"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
REVOKED_WITHIN_S = 10.0  # the guide, "Revoking a node"


def run(*argv: str, cwd: Path) -> str:
    """Run one guide command; fail with its output when it fails."""
    proc = subprocess.run([console_script(argv[0]), *argv[1:]], cwd=cwd, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"{' '.join(argv)}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def test_guide_mentions_every_step() -> None:
    """Every command this test runs is written in the guide."""
    text = GUIDE.read_text(encoding="utf-8")
    for command in ("edge-hq ca init", "edge-hq broker-config", "edge-node init",
                    "edge-node enroll request", "edge-hq node sign", "edge-node enroll install",
                    "edge-hq serve", "edge-node serve", "edge-node sync status",
                    "edge-hq fleet", "edge-hq node revoke"):
        program, rest = command.split(" ", 1)
        pattern = re.escape(program) + r"(?: --\S+ \S+)* " + re.escape(rest)
        assert re.search(pattern, text), command


class Broker:
    """The guide's `mosquitto -c …`, started as root so it switches to the `mosquitto`
    user as in the field; its log is kept to check for permission and ACL trouble."""

    def __init__(self, conf: Path, log: Path) -> None:
        """Remember where the config and the log are."""
        self.conf, self.log = conf, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, port: int) -> None:
        """Start and wait for the listener; check the broker dropped to `mosquitto`."""
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log,
                                            stderr=subprocess.STDOUT)
        process = self.process

        def listening() -> bool:
            assert process.poll() is None, self.log.read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            except OSError:
                return False
            return True

        wait_for(listening, 10, "the broker to listen", detail=self.log.read_text)
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        uid = re.search(r"^Uid:\s+(\d+)", status, re.M)
        assert uid and int(uid.group(1)) == pwd.getpwnam("mosquitto").pw_uid, status

    def stop(self) -> None:
        """SIGTERM (the broker saves its persistence file) and wait."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(15)
        self.process = None

    def reload(self) -> None:
        """What `systemctl reload mosquitto` does: SIGHUP (rereads the CRL, drops no one)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGHUP)

    def restart(self, port: int) -> None:
        """What `systemctl restart mosquitto` does."""
        self.stop()
        self.start(port)


def ensure_mosquitto_user() -> None:
    """The Debian package creates it; a bare CI machine may lack it."""
    try:
        pwd.getpwnam("mosquitto")
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", "mosquitto"], check=True)


def wait_for_log(broker: Broker, text: str, timeout: float, what: str) -> None:
    """Wait until the broker's log holds `text`."""
    wait_for(lambda: text in broker.log.read_text(), timeout, what,
             detail=lambda: broker.log.read_text()[-2000:])


def connects(port: int, sync_dir: Path, client_id: str) -> bool:
    """Whether a fresh MQTT session opens with the node's own certificate within 3 s."""
    return mqtt_session_opens(port, sync_dir / "ca.pem", sync_dir / "node.pem",
                              sync_dir / "node.key", client_id)


def wait_status(node: Path, done: Any, what: str) -> dict[str, Any]:
    """Poll `edge-node sync status --json` until `done(status)`."""
    status: dict[str, Any] = {}

    def reached() -> bool:
        status.clear()
        status.update(json.loads(run("edge-node", "--data-dir", "var", "sync", "status",
                                     "--json", cwd=node)))
        return bool(done(status))

    wait_for(reached, 60, what, interval=0.5, detail=lambda: str(status))
    return status


@pytest.fixture
def field_dir() -> Iterator[Path]:
    """A directory the unprivileged broker can reach (pytest's tmp_path is 0700)."""
    ensure_mosquitto_user()
    path = Path(tempfile.mkdtemp(prefix="guide-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.broker
def test_zero_to_enrolled_node(field_dir: Path) -> None:
    """The guide's steps, in order, on this machine, with the broker as `mosquitto`."""
    tmp_path = field_dir
    hq, node = tmp_path / "hq", tmp_path / "node"
    hq.mkdir()
    node.mkdir()
    port, hq_port, http = free_port(), free_port(), free_port()
    out = run("edge-hq", "--db", "hq.db", "ca", "init", "--keys", "keys",
              "--broker-host", "localhost", cwd=hq)
    fingerprint = re.search(r"CA fingerprint.*: ([0-9A-F:]+)", out)
    assert fingerprint, out
    out = run("edge-hq", "--db", "hq.db", "broker-config", "--keys", "keys", "--out", "broker",
              "--port", str(port), "--bind", "127.0.0.1", "--hq-port", str(hq_port),
              "--run-as", "mosquitto", cwd=hq)
    assert "broker-admin" in out
    broker = Broker(hq / "broker/mosquitto.conf", tmp_path / "mosquitto.log")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        broker.start(port)
        run("edge-node", "--data-dir", "var", "init", "--center-id", "ISB-01", cwd=node)
        out = run("edge-node", "--data-dir", "var", "enroll", "request", "--out",
                  str(tmp_path / "usb/enroll.json"), cwd=node)
        assert "request digest" in out
        out = run("edge-hq", "--db", "hq.db", "node", "sign", str(tmp_path / "usb/enroll.json"),
                  "--center", "ISB-01", "--broker", f"localhost:{port}", "--keys", "keys",
                  "--out", str(tmp_path / "usb/bundle.json"), cwd=hq)
        assert "lets the node in now" in out and "restart" not in out  # no restart needed
        out = run("edge-node", "--data-dir", "var", "enroll", "install",
                  str(tmp_path / "usb/bundle.json"), "--ca-fingerprint", fingerprint.group(1),
                  cwd=node)
        assert "enrolled" in out
        node_id = json.loads((tmp_path / "usb/bundle.json").read_text())["node_id"]
        procs.append(subprocess.Popen(
            [console_script("edge-hq"), "--db", "hq.db", "serve", "--keys", "keys", "--broker",
             f"localhost:{hq_port}"], cwd=hq, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen(
            [console_script("edge-node"), "--data-dir", "var", "serve", "--port", str(http)],
            cwd=node, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        status = wait_status(node, lambda s: s["link"] == "online" and s["count"] == 0,
                             "node to sync")
        fleet = json.loads(run("edge-hq", "--db", "hq.db", "fleet", "--json", cwd=hq))
        assert [row["center_id"] for row in fleet] == ["ISB-01"]
        assert fleet[0]["acked_seq"] == status["acked_seq"]

        broker.restart(port)  # persistence: the broker saves and restores its sessions
        persisted = hq / "broker/persist/mosquitto.db"
        assert persisted.exists() and persisted.stat().st_size > 0
        assert persisted.stat().st_uid == pwd.getpwnam("mosquitto").pw_uid
        wait_status(node, lambda s: s["link"] == "online", "node back after a broker restart")

        pid = broker.process.pid if broker.process else 0
        started = time.monotonic()
        out = run("edge-hq", "--db", "hq.db", "node", "revoke", node_id, "--keys", "keys",
                  cwd=hq)
        assert "disconnected the node" in out
        kicked = f"Client {node_id} been disconnected by administrative action"
        wait_for_log(broker, kicked, REVOKED_WITHIN_S, "the broker to drop the revoked node")
        assert time.monotonic() - started < REVOKED_WITHIN_S
        broker.reload()  # the guide's `systemctl reload mosquitto`
        assert broker.process is not None and broker.process.pid == pid  # never restarted
        wait_for(lambda: not connects(port, node / "var/sync", node_id), REVOKED_WITHIN_S,
                 "the reloaded broker to refuse the revoked certificate")
        wait_for_log(broker, "certificate verify failed", 10, "the TLS handshake to refuse it")
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        broker.stop()
    log = broker.log.read_text()
    for trouble in ("Permission denied", "Warning", "Error:"):  # OpenSSL Error[0]: the revoked node
        assert trouble not in log, log
