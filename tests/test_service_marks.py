"""tests/service_marks.py: `make check` can trust the markers (no service behind its back).

An inner pytest session runs small tests against a fake `mosquitto` (a script that exits at
once) and a PostgreSQL URL on a port nobody listens on, so no real service is involved.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.tls_broker import free_port

REPO = Path(__file__).resolve().parent.parent
CHECK_SELECTION = "not broker and not postgres and not browser and not slow and not tools"

INNER = '''
import subprocess

import psycopg
import pytest

FAKE_MOSQUITTO = {mosquitto!r}
DEAD_PG = "postgresql://postgres@127.0.0.1:{port}/test?connect_timeout=2"


def start_broker():
    subprocess.Popen([FAKE_MOSQUITTO, "-c", "x.conf"]).wait()


def connect_pg():
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(DEAD_PG)


def test_unmarked_broker():
    start_broker()


@pytest.mark.broker
def test_marked_broker():
    start_broker()


def test_unmarked_postgres():
    connect_pg()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request):
    return request.param


def test_store_param(store):
    if store == "postgresql":
        connect_pg()


@pytest.fixture
def broker():
    start_broker()


def test_broker_fixture(broker):
    pass


def test_no_service():
    subprocess.run(["true"], check=True)
'''


def inner_pytest(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the inner tests with the plugin; return the finished process."""
    mosquitto = tmp_path / "bin" / "mosquitto"
    mosquitto.parent.mkdir()
    mosquitto.write_text("#!/bin/sh\nexit 0\n")
    mosquitto.chmod(0o755)
    (tmp_path / "test_inner.py").write_text(INNER.format(mosquitto=str(mosquitto),
                                                          port=free_port()))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.service_marks", "-p", "no:cacheprovider",
         "-rA", "-q", "test_inner.py", *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)


def outcomes(output: str) -> dict[str, str]:
    """{test id: PASSED/FAILED} from the -rA summary."""
    found = {}
    for line in output.splitlines():
        word, _, rest = line.partition(" ")
        if word in ("PASSED", "FAILED") and "::" in rest:
            found[rest.split(" ")[0].split("::", 1)[1]] = word
    return found


def test_service_use_without_its_marker_fails(tmp_path: Path) -> None:
    """Unmarked use of a broker or PostgreSQL fails and names the marker; marked use passes."""
    proc = inner_pytest(tmp_path)
    assert outcomes(proc.stdout) == {
        "test_unmarked_broker": "FAILED",
        "test_marked_broker": "PASSED",
        "test_unmarked_postgres": "FAILED",
        "test_store_param[sqlite]": "PASSED",
        "test_store_param[postgresql]": "PASSED",
        "test_broker_fixture": "PASSED",
        "test_no_service": "PASSED",
    }, proc.stdout + proc.stderr
    assert "add @pytest.mark.broker" in proc.stdout
    assert "add @pytest.mark.postgres" in proc.stdout


def test_check_selection_leaves_out_what_fixtures_imply(tmp_path: Path) -> None:
    """The `make check` selection drops the PostgreSQL parameter and the broker fixture."""
    proc = inner_pytest(tmp_path, "-m", CHECK_SELECTION, "--collect-only")
    collected = {line.split("::", 1)[1] for line in proc.stdout.splitlines() if "::" in line}
    assert collected == {"test_unmarked_broker", "test_unmarked_postgres",
                         "test_store_param[sqlite]", "test_no_service"}, proc.stdout


def test_make_check_uses_the_same_selection() -> None:
    """The Makefile's `check` deselects exactly the markers this plugin and the suite set."""
    makefile = (REPO / "Makefile").read_text()
    assert f"CHECK_SELECTION := {CHECK_SELECTION}\n" in makefile
    assert "-m '$(CHECK_SELECTION)'" in makefile
