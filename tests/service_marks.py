"""Markers for tests that need a system service, set from their fixtures and checked at run time.

`make check` runs `-m "not broker and not postgres and not browser and not slow and not
tools"`, so a test that needs a service must carry its marker. Most get it here, from what
they ask for:

- `postgres`: any parametrization with the value "postgresql" (the `hq_url` and `hq_store`
  fixtures run each HQ test on SQLite and on PostgreSQL);
- `browser`: the `browser` fixture (Debian's chromium through Playwright);
- `broker`: the `broker` fixtures, which start a TLS Mosquitto.

Tests that start a broker themselves carry `@pytest.mark.broker` (or a module `pytestmark`).
Nothing relies on remembering it: while a test runs, starting `mosquitto` or connecting to
PostgreSQL is recorded, and a test that did either without the marker fails, naming it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import pytest

SERVICE_MARKERS = ("broker", "postgres", "browser")
BROKER_FIXTURES = frozenset({"broker"})
BROWSER_FIXTURES = frozenset({"browser"})
POSTGRES_PARAM = "postgresql"

_used: dict[str, set[str]] = {}  # nodeid -> services it touched while running
_current: list[str] = []  # the nodeid of the test running now (none between tests)


def implied_markers(item: pytest.Item) -> set[str]:
    """The service markers a collected test needs, judged from its fixtures and parameters."""
    names = set(getattr(item, "fixturenames", ()))
    callspec = getattr(item, "callspec", None)
    params = callspec.params.values() if callspec is not None else ()
    found = set()
    if any(value == POSTGRES_PARAM for value in params):
        found.add("postgres")
    if names & BROWSER_FIXTURES:
        found.add("browser")
    if names & BROKER_FIXTURES:
        found.add("broker")
    return found


def record(service: str) -> None:
    """Note that the running test uses `service`."""
    if _current:
        _used.setdefault(_current[-1], set()).add(service)


def _watch_popen() -> None:
    """Record every `mosquitto` started through subprocess.Popen."""
    original: Callable[..., None] = subprocess.Popen.__init__

    def init(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
        argv = [args] if isinstance(args, str | bytes | Path) else list(args)
        if argv and Path(str(argv[0])).name == "mosquitto":
            record("broker")
        original(self, args, *rest, **kwargs)

    subprocess.Popen.__init__ = init  # type: ignore[method-assign]


def _watch_psycopg() -> None:
    """Record every connection to PostgreSQL made through `psycopg.connect`."""
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return
    original = psycopg.connect

    def connect(*args: Any, **kwargs: Any) -> Any:
        record("postgres")
        return original(*args, **kwargs)

    psycopg.connect = connect


def pytest_configure(config: pytest.Config) -> None:
    """Start watching for service use."""
    _watch_popen()
    _watch_psycopg()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Add the markers each test's fixtures imply."""
    for item in items:
        for name in sorted(implied_markers(item) - {m.name for m in item.iter_markers()}):
            item.add_marker(name)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """From here on, service use counts against `item`."""
    _current[:] = [item.nodeid]
    _used.pop(item.nodeid, None)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Fail a test that used a service (in its setup or body) without the service's marker."""
    result = yield
    marked = {m.name for m in item.iter_markers()}
    missing = sorted(_used.get(item.nodeid, set()) - marked)
    if missing:
        marks = ", ".join(f"@pytest.mark.{name}" for name in missing)
        pytest.fail(f"{item.nodeid} uses {', '.join(missing)} but is not marked: add {marks} "
                    "(see tests/service_marks.py)", pytrace=False)
    return result


def pytest_runtest_teardown(item: pytest.Item) -> None:
    """Teardown's own service use (stopping a broker) is not checked."""
    _current.clear()
