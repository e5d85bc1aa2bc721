"""bench/hq_queries.py in a small run: the bulk load equals ingest, typed and JSON agree."""

from __future__ import annotations

import pytest

from bench import hq_queries

pytestmark = pytest.mark.postgres


def test_small_run_checks_itself(capsys: pytest.CaptureFixture[str]) -> None:
    """Records applied through ingest match the COPY load; each query's typed answer equals
    the JSON scan's (the benchmark exits otherwise); the table names every query."""
    hq_queries.main(["--records", "3000", "--centers", "10", "--repeats", "2"])
    out = capsys.readouterr()
    assert "300 records applied through ingest match the bulk load" in out.err
    assert "load average" in out.out
    for name in hq_queries.QUERIES:
        assert f"\n{name} " in out.out
