"""HQ stores for tests: SQLite in a temp dir and PostgreSQL in a throwaway schema."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hq.store import HQDatabase
from tests.sync_env import SyncEnv
from tests.tls_broker import TLSBroker

PG_URL = os.environ.get("KHIDMAT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
# A PostgreSQL store takes HQ's PII field key from EDGE_HQ_PII_KEY (hq/pii.py): one key file
# for this test session (each schema records the key's id on first use).
os.environ.setdefault("EDGE_HQ_PII_KEY",
                      str(Path(tempfile.mkdtemp(prefix="hq-pii-")) / "pii.key"))


def postgres_url_with_schema() -> Iterator[str]:
    """A URL whose search_path is a fresh schema, dropped afterwards."""
    import psycopg

    schema = "t_" + uuid.uuid4().hex[:12]
    try:
        admin = psycopg.connect(PG_URL, autocommit=True)
    except psycopg.OperationalError as exc:  # make test starts it; say so if it is down
        pytest.fail(f"PostgreSQL not reachable at {PG_URL}: {exc}")
    admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def hq_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each HQ test runs on both stores."""
    if request.param == "sqlite":
        yield str(tmp_path / "hq.db")
    else:
        yield from postgres_url_with_schema()


@pytest.fixture
def hq_db(hq_url: str) -> Iterator[HQDatabase]:
    """An opened, migrated HQ store."""
    db = HQDatabase(hq_url)
    yield db
    db.close()


@pytest.fixture
def env(tmp_path: Path, hq_url: str) -> Iterator[SyncEnv]:
    """HQ keys and an HQ store (SQLite or PostgreSQL) and a TLS broker, not started: a test
    starts it where it needs one (bundles need none)."""
    broker = TLSBroker(tmp_path / "broker")
    yield SyncEnv(tmp_path, broker, hq_url)
    broker.stop()
