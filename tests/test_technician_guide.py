"""docs/technician-guide.md, run for real: zero to an enrolled, syncing node."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.helpers import console_script, wait_for
from tests.tls_broker import free_port

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "technician-guide.md"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


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
                    "edge-hq fleet"):
        program, rest = command.split(" ", 1)
        pattern = re.escape(program) + r"(?: --\S+ \S+)* " + re.escape(rest)
        assert re.search(pattern, text), command


@pytest.mark.broker
def test_zero_to_enrolled_node(tmp_path: Path) -> None:
    """The guide's steps, in order, on this machine."""
    hq, node = tmp_path / "hq", tmp_path / "node"
    hq.mkdir()
    node.mkdir()
    port, http = free_port(), free_port()
    out = run("edge-hq", "--db", "hq.db", "ca", "init", "--keys", "keys",
              "--broker-host", "localhost", cwd=hq)
    fingerprint = re.search(r"CA fingerprint.*: ([0-9A-F:]+)", out)
    assert fingerprint, out
    run("edge-hq", "broker-config", "--keys", "keys", "--out", "broker", "--port", str(port),
        "--bind", "127.0.0.1", "--run-as", "root", cwd=hq)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(subprocess.Popen([MOSQUITTO, "-c", str(hq / "broker/mosquitto.conf")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        run("edge-node", "--data-dir", "var", "init", "--center-id", "ISB-01", cwd=node)
        out = run("edge-node", "--data-dir", "var", "enroll", "request", "--out",
                  str(tmp_path / "usb/enroll.json"), cwd=node)
        assert "request digest" in out
        run("edge-hq", "--db", "hq.db", "node", "sign", str(tmp_path / "usb/enroll.json"),
            "--center", "ISB-01", "--broker", f"localhost:{port}", "--keys", "keys",
            "--out", str(tmp_path / "usb/bundle.json"), cwd=hq)
        out = run("edge-node", "--data-dir", "var", "enroll", "install",
                  str(tmp_path / "usb/bundle.json"), "--ca-fingerprint", fingerprint.group(1),
                  cwd=node)
        assert "enrolled" in out
        procs.append(subprocess.Popen(
            [console_script("edge-hq"), "--db", "hq.db", "serve", "--keys", "keys", "--broker",
             f"localhost:{port}"], cwd=hq, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen(
            [console_script("edge-node"), "--data-dir", "var", "serve", "--port", str(http)],
            cwd=node, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        status: dict[str, object] = {}

        def synced() -> bool:
            status.update(json.loads(run("edge-node", "--data-dir", "var", "sync", "status",
                                         "--json", cwd=node)))
            # A fresh node has nothing to send (acked_seq stays 0): online and empty is all.
            return status["link"] == "online" and status["count"] == 0

        wait_for(synced, 60, "the node online with nothing left to send", interval=0.5,
                 detail=lambda: str(status))
        fleet = json.loads(run("edge-hq", "--db", "hq.db", "fleet", "--json", cwd=hq))
        assert [row["center_id"] for row in fleet] == ["ISB-01"]
        assert fleet[0]["acked_seq"] == status["acked_seq"]
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
