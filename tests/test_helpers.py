"""tests/helpers.py's `wait_for`: the one way tests wait for an event."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import console_script, exited, wait_for


def test_returns_the_first_true_value() -> None:
    """Polls until the predicate gives something true and hands that back."""
    answers = iter([None, 0, "", {"ok": True}])
    assert wait_for(lambda: next(answers), 5, "an answer", interval=0) == {"ok": True}


def test_times_out_naming_what_it_waited_for() -> None:
    """After `timeout` seconds: an AssertionError with `what` and the detail."""
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"timed out after 0.2 s waiting for the moon\n"
                                             r"log: nothing"):
        wait_for(lambda: False, 0.2, "the moon", detail=lambda: "log: nothing")
    assert 0.2 <= time.monotonic() - started < 2


def test_a_dead_process_stops_the_wait_at_once() -> None:
    """`stop=exited(proc)` fails right away instead of waiting out the timeout."""
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    started = time.monotonic()
    with pytest.raises(AssertionError, match="the server exited with 3 while waiting for health"):
        wait_for(lambda: False, 30, "health", stop=exited(proc, "the server"))
    assert time.monotonic() - started < 1


def test_console_scripts_come_from_the_running_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """edge-node and edge-hq beside sys.executable, whatever VIRTUAL_ENV says."""
    monkeypatch.setenv("VIRTUAL_ENV", "/nonexistent-venv")
    for name in ("edge-node", "edge-hq"):
        path = Path(console_script(name))
        assert path.parent == Path(sys.executable).parent and path.is_file(), path
        out = subprocess.run([str(path), "--help"], capture_output=True, text=True,
                             timeout=60, check=True).stdout
        assert "Usage:" in out
