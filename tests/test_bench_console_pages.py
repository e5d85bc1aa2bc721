"""bench/console_pages.py in a small run: a real console process answers every page and API
endpoint signed in, the bare time is measured beside it, and --check fails a missed aim."""

from __future__ import annotations

import pytest

from bench import console_pages

pytestmark = pytest.mark.postgres


def test_small_run_measures_every_page(capsys: pytest.CaptureFixture[str]) -> None:
    """Every page is in the table with page and bare p95; an aim no page can meet makes
    --check exit 1 (the benchmark exits earlier if a page is not HTTP 200)."""
    status = console_pages.main(["--records", "3000", "--centers", "10", "--repeats", "2",
                                 "--check", "--aim-ms", "0.001"])
    out = capsys.readouterr().out
    assert status == 1
    assert "load average" in out and "bare p95" in out
    for path, _, _ in console_pages.PAGES:
        assert f"\n{path} " in out
    assert "MISSED" in out and " met" not in out
