"""systemd: unit files that verify, sd_notify READY/WATCHDOG/STOPPING, install-systemd."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from edge_node.cli.install import HQ_UNITS, NODE_UNITS, TEMPLATE_BIN_DIR, default_bin_dir
from edge_node.cli.main import main
from edge_node.config import Settings
from edge_node.node import Node
from edge_node.service.systemd_notify import (
    ServiceNotifier,
    Watchdog,
    notify,
    serving_alive,
    watchdog_interval_s,
)
from tests.helpers import console_script, wait_for
from tests.tls_broker import free_port

REPO = Path(__file__).resolve().parent.parent
UNITS = REPO / "systemd"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(SYSTEMD_ANALYZE is None,
                                   reason="systemd-analyze missing: run .ci/system-deps.sh")


def install(root: Path, *args: str) -> Any:
    """`edge-node install-systemd --root ROOT` with this venv's bin directory."""
    return CliRunner().invoke(main, ["install-systemd", "--root", str(root), "--bin-dir",
                                     str(default_bin_dir()), *args])


def directives(path: Path) -> dict[str, list[str]]:
    """Every `Key=value` of a unit file (keys may repeat), comments skipped."""
    found: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith(("#", "[", " ")) and "=" in line:
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


# -- the unit files -------------------------------------------------------------------------
@needs_analyze
@pytest.mark.parametrize("hq", [False, True], ids=["node", "hq"])
def test_rendered_units_pass_systemd_analyze_verify(tmp_path: Path, hq: bool) -> None:
    """Rendered with this venv's path (ExecStart must exist), every unit verifies clean."""
    result = install(tmp_path, *(["--hq"] if hq else []))
    assert result.exit_code == 0, result.output
    units = [tmp_path / "etc/systemd/system" / n for n in (HQ_UNITS if hq else NODE_UNITS)]
    done = subprocess.run([str(SYSTEMD_ANALYZE), "verify", "--man=no", *map(str, units)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


@needs_analyze
@pytest.mark.parametrize("unit", ["edge-node.service", "edge-node-backup.service",
                                  "edge-hq.service"])
def test_services_are_hardened(tmp_path: Path, unit: str) -> None:
    """`systemd-analyze security` rates each service's exposure 2.0 or better (of 10)."""
    install(tmp_path, *(["--hq"] if unit in HQ_UNITS else []))
    path = tmp_path / "etc/systemd/system" / unit
    done = subprocess.run([str(SYSTEMD_ANALYZE), "security", "--offline=yes", "--threshold=20",
                           str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-600:]


def test_node_unit_settings() -> None:
    """What the field relies on, line by line."""
    unit = directives(UNITS / "edge-node.service")
    assert unit["Type"] == ["notify"] and unit["WatchdogSec"] and unit["Restart"] == [
        "on-failure"]
    assert unit["User"] == ["edge-node"] and unit["ProtectSystem"] == ["strict"]
    assert unit["ReadWritePaths"] == ["/var/lib/edge-node"]
    for key in ("NoNewPrivileges", "PrivateTmp", "ProtectHome"):
        assert unit[key] == ["yes"], key
    assert unit["CapabilityBoundingSet"] == [""]
    assert unit["LoadCredentialEncrypted"] == [
        "edge-node-key:/etc/credstore.encrypted/edge-node-key"]
    assert "EDGE_NODE_KEY_FILE=%d/edge-node-key" in unit["Environment"]
    text = (UNITS / "edge-node.service").read_text()
    assert "#LoadCredential=edge-node-key:" in text  # the alternative without TPM
    assert unit["ExecStart"][0].startswith(TEMPLATE_BIN_DIR + "/edge-node ")
    backup = directives(UNITS / "edge-node-backup.service")
    assert backup["ExecStart"][0].endswith(" backup") and backup["Type"] == ["oneshot"]
    timer = directives(UNITS / "edge-node-backup.timer")
    assert timer["Unit"] == ["edge-node-backup.service"] and timer["Persistent"] == ["true"]


def test_unit_environment_names_real_settings() -> None:
    """EDGE_NODE_* in the units are settings (an unknown one stops the node at start)."""
    from edge_node.config import SETTINGS_BY_NAME

    for name in ("edge-node.service", "edge-node-backup.service"):
        for value in directives(UNITS / name)["Environment"]:
            for pair in value.split():
                if pair.startswith("EDGE_NODE_"):
                    assert pair.split("=")[0][10:].lower() in SETTINGS_BY_NAME, pair


# -- sd_notify ------------------------------------------------------------------------------
@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """A bound AF_UNIX datagram socket, as systemd's NOTIFY_SOCKET (short path: 108 bytes)."""
    directory = tempfile.mkdtemp(prefix="sdn-")
    path = os.path.join(directory, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    try:
        yield sock, path
    finally:
        sock.close()
        shutil.rmtree(directory)


def receive(sock: socket.socket, timeout: float) -> list[str]:
    """The next datagram's lines, or [] when none comes in time."""
    sock.settimeout(timeout)
    try:
        return sock.recv(4096).decode().splitlines()
    except TimeoutError:
        return []


def collect(sock: socket.socket, seen: list[str]) -> list[str]:
    """Add what arrives within a short while to `seen`; return `seen`."""
    seen.extend(receive(sock, 0.2))
    return seen


def test_serve_notifies_ready_watchdog_and_stopping(
        settings: Settings, notify_socket: tuple[socket.socket, str]) -> None:
    """The real `edge-node serve`: READY=1 once listening, pings, STOPPING=1 on SIGTERM."""
    sock, path = notify_socket
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_NODE_")}
    env.update(NOTIFY_SOCKET=path, WATCHDOG_USEC="1000000")
    process = subprocess.Popen([console_script("edge-node"), "--data-dir", settings["data_dir"],
                                "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    seen: list[str] = []
    try:
        wait_for(lambda: "READY=1" in collect(sock, seen), 60, "READY=1", interval=0,
                 detail=lambda: str(seen))
        assert "WATCHDOG=1" not in seen[:seen.index("READY=1")]  # nothing before READY
        socket.create_connection(("127.0.0.1", port), timeout=2).close()  # bound by then
        wait_for(lambda: collect(sock, seen).count("WATCHDOG=1") >= 3, 15,
                 "three watchdog pings", interval=0, detail=lambda: str(seen))
        process.send_signal(signal.SIGTERM)
        wait_for(lambda: "STOPPING=1" in collect(sock, seen), 30, "STOPPING=1", interval=0,
                 detail=lambda: str(seen))
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stdout is not None
        output = process.stdout.read().decode(errors="replace")
    assert "Traceback" not in output, output


def recorder(sent: list[str]) -> Callable[[str], bool]:
    """A notify function that keeps what it is told to send, and succeeds."""
    def notify(message: str) -> bool:
        sent.append(message)
        return True
    return notify


def test_watchdog_withholds_pings_while_the_probe_fails() -> None:
    """No ping while unhealthy; pings resume once healthy (systemd decides on a restart)."""
    sent: list[str] = []
    healthy = [False]
    dog = Watchdog(0.05, lambda budget: healthy[0], recorder(sent))
    dog.start()
    time.sleep(0.3)
    assert sent == []
    healthy[0] = True
    wait_for(lambda: sent, 5, "a ping once healthy")
    dog.stop()
    assert set(sent) == {"WATCHDOG=1"}


def test_a_crashing_probe_counts_as_unhealthy() -> None:
    """A bug in the probe must not kill the thread or send pings."""
    sent: list[str] = []

    def probe(budget: float) -> bool:
        raise RuntimeError("bug")

    dog = Watchdog(0.05, probe, recorder(sent))
    dog.start()
    time.sleep(0.2)
    assert dog._thread.is_alive()
    dog.stop()
    assert sent == []


def test_serving_alive_needs_the_writer_and_the_http_server(node: Node) -> None:
    """No HTTP server: not alive; stopped writer: not alive."""
    assert serving_alive(node.writer, "127.0.0.1", free_port(), 1.0) is False
    node.writer.close()
    assert serving_alive(node.writer, "127.0.0.1", free_port(), 1.0) is False


def test_notify_client(notify_socket: tuple[socket.socket, str]) -> None:
    """One datagram per message; no socket means a quiet no-op; WATCHDOG_USEC parsing."""
    sock, path = notify_socket
    assert notify("STATUS=hello", {"NOTIFY_SOCKET": path}) is True
    assert receive(sock, 2) == ["STATUS=hello"]
    assert notify("READY=1", {}) is False
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "x"}) is None
    assert watchdog_interval_s({}) is None


def test_notify_to_an_abstract_socket() -> None:
    """`@name` is Linux's abstract namespace."""
    name = f"edge-node-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        assert notify("READY=1", {"NOTIFY_SOCKET": "@" + name})
        assert receive(sock, 2) == ["READY=1"]


def test_notifier_is_inert_outside_systemd() -> None:
    """Without NOTIFY_SOCKET there is no watchdog thread and nothing is sent."""
    notifier = ServiceNotifier({"WATCHDOG_USEC": "1000000"})
    notifier.ready("x", lambda budget: True)
    assert notifier.watchdog is None
    notifier.stopping()


# -- install-systemd ------------------------------------------------------------------------
def mode(path: Path) -> int:
    """Permission bits."""
    return path.stat().st_mode & 0o777


def test_install_into_a_root_creates_files_with_the_right_modes(tmp_path: Path) -> None:
    """Units 0644, data directory 0700 owned by the new system user, credstore 0700."""
    result = install(tmp_path)
    assert result.exit_code == 0, result.output
    for name in NODE_UNITS:
        unit = tmp_path / "etc/systemd/system" / name
        assert mode(unit) == 0o644
        assert TEMPLATE_BIN_DIR not in unit.read_text()
        if name.endswith(".service"):
            assert f"ExecStart={default_bin_dir()}/edge-node " in unit.read_text()
    data = tmp_path / "var/lib/edge-node"
    assert data.is_dir() and mode(data) == 0o700
    passwd = (tmp_path / "etc/passwd").read_text()
    entry = next(line for line in passwd.splitlines() if line.startswith("edge-node:"))
    assert entry.endswith(":/var/lib/edge-node:/usr/sbin/nologin")
    if os.geteuid() == 0:
        assert data.stat().st_uid == int(entry.split(":")[2])
    assert mode(tmp_path / "etc/credstore.encrypted") == 0o700
    assert "systemctl daemon-reload" in result.output
    assert "systemd-creds encrypt --name=edge-node-key" in result.output
    assert "systemctl enable --now edge-node.service edge-node-backup.timer" in result.output
    again = install(tmp_path)
    assert again.exit_code == 0 and "nothing to change" in again.output


def test_a_changed_unit_is_only_replaced_with_force(tmp_path: Path) -> None:
    """An edited unit stops the install untouched; --force replaces it and keeps a .bak."""
    assert install(tmp_path).exit_code == 0
    unit = tmp_path / "etc/systemd/system/edge-node.service"
    edited = unit.read_text() + "# local edit\n"
    unit.write_text(edited)
    refused = install(tmp_path)
    assert refused.exit_code == 1 and "--force" in refused.output
    assert "Traceback" not in refused.output and unit.read_text() == edited
    forced = install(tmp_path, "--force")
    assert forced.exit_code == 0, forced.output
    assert "# local edit" not in unit.read_text()
    assert (unit.parent / "edge-node.service.bak").read_text() == edited


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    """--dry-run prints the plan and leaves the root empty."""
    result = install(tmp_path, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "would write" in result.output and "would create system user edge-node" in result.output
    assert list(tmp_path.iterdir()) == []


def test_hq_install(tmp_path: Path) -> None:
    """--hq: the HQ unit and the edge-hq account instead of the node's."""
    result = install(tmp_path, "--hq")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "etc/systemd/system/edge-hq.service").exists()
    assert not (tmp_path / "etc/systemd/system/edge-node.service").exists()
    assert mode(tmp_path / "var/lib/edge-hq") == 0o700
    assert "edge-hq:" in (tmp_path / "etc/passwd").read_text()
