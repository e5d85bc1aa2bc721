"""`edge-hq pii-key rotate` (hq/pii_rotate.py), on SQLite and PostgreSQL: every PII value HQ
holds moves to the new version of its field key, batch by batch; an interrupted rotation is
finished by running it again; reads, lookups and fleet keys keep working; the old version
is gone from the key file and decrypts nothing HQ holds; nothing is in clear at rest."""

from __future__ import annotations

import json
import re
import stat
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_node.node import Node
from hq import fleet_keys, lookups, pii, pii_keys, pii_rotate
from hq.cli.main import main as hq_cli
from hq.pii_keys import Keyring
from hq.store import HQDatabase, utc_now
from sync.pii import fleet_index
from tests.sync_env import SyncEnv
from tests.test_pii_fleet import CNIC, NAME, enrolled, exchange, hq_text, leaks, register
from tests.test_pii_fleet import second as second  # the fixture

HELD = re.compile(r"h([0-9]+):[A-Za-z0-9+/=]{20,}")


@pytest.fixture
def own_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's PostgreSQL key file (the session's shared one must not rotate)."""
    path = tmp_path / "pg-key" / "pii.key"
    monkeypatch.setenv(pii.ENV_KEY_FILE, str(path))
    return path


def key_file(url: str, own_key: Path) -> Path:
    """Where the store's field key lives."""
    return own_key if url.startswith("postgres") else Path(url).with_name("hq.db.pii.key")


def versions(url: str) -> list[int]:
    """The key version of every encrypted value in every HQ table (JSON escapes undone)."""
    text = hq_text(url).replace("\\\\", "\\").replace('\\"', '"')
    return [int(m.group(1)) for m in HELD.finditer(text)]


def held_values(db: HQDatabase) -> list[tuple[str, str, str]]:
    """(table, column, value) of every PII value in the projections and the fleet keys."""
    out = [("hq_fleet_keys", "key", r[0]) for r in db.execute(
        "SELECT key_enc FROM hq_fleet_keys WHERE key_enc IS NOT NULL").fetchall()]
    for row in db.execute("SELECT cnic_enc, name_enc, phone_enc FROM hq_citizens").fetchall():
        out += [("citizens", c, v) for c, v in zip(("cnic_enc", "name_enc", "phone_enc"), row,
                                                    strict=True) if v]
    return out


def test_rotation_interrupted_then_finished_reencrypts_all_and_retires_the_old_key(
        own_key: Path, env: SyncEnv, node: Node, second: Node, tmp_path: Path) -> None:
    """Two nodes' citizens at HQ; rotate two batches, stop, rerun: every value under h2,
    the old version gone from the key file and useless, reads audited, lookups found."""
    usb = tmp_path / "usb"
    usb.mkdir()
    idents = {n.node_id: enrolled(env, n) for n in (node, second)}
    made = [register(node), register(second, "Ayesha S. Qureshi")]
    db = HQDatabase(env.hq_url)
    fleet_keys.distribute(db)
    db.close()
    for n in (node, second):
        exchange(env, n, idents[n.node_id], usb)
        exchange(env, n, idents[n.node_id], usb)
    path = key_file(env.hq_url, own_key)
    old = pii_keys.load(path, create=False)
    assert list(old.keys) == [1]
    before = versions(env.hq_url)
    assert len(before) >= 7 and set(before) == {1}  # fleet key, merge states, projections
    running = HQDatabase(env.hq_url)  # a process open across the rotation (a worker)

    db = HQDatabase(env.hq_url)
    with pytest.raises(pii_rotate.Interrupted):
        pii_rotate.rotate(db, batch=1, max_batches=1)  # the fleet keys and one citizen
    db.close()
    assert sorted(pii_keys.load(path, create=False).keys) == [1, 2]
    assert set(versions(env.hq_url)) == {1, 2}  # half done: both versions held, both read
    db = HQDatabase(env.hq_url)
    assert {pii.read_citizen(db, "analyst-7", "mid-rotation", citizen_id=m["id"],
                             now=utc_now())["cnic"] for m in made} == {CNIC}
    db.close()
    assert pii.encrypt(pii.field_key(running), "citizens", "name_enc", "x").startswith("h2:")

    result = CliRunner().invoke(hq_cli, ["--db", env.hq_url, "pii-key", "rotate",
                                         "--batch", "1"])
    assert result.exit_code == 0, result.output
    assert "PII key version 2" in result.output and "retired versions: 1" in result.output
    assert "citizens: 2/2 records" in result.output  # progress
    assert set(versions(env.hq_url)) == {2}  # no h1: value left anywhere
    assert list(pii_keys.load(path, create=False).keys) == [2]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert leaks(hq_text(env.hq_url)) == []
    if not env.hq_url.startswith("postgres"):
        for raw in Path(env.hq_url).parent.glob("hq.db*"):
            assert leaks(raw.read_bytes()) == [], raw.name

    db = HQDatabase(env.hq_url)  # reopens: the store is bound to version 2
    try:
        values = held_values(db)
        assert values
        for table, column, value in values:  # the old key decrypts nothing HQ holds
            for stale in (old, Keyring(path, {2: old.keys[1]})):
                with pytest.raises(pii.PIIKeyError):
                    pii.decrypt(stale, table, column, value)
        current = pii.current_fleet(db)  # the wrapped fleet key still opens
        assert current is not None and current[0] == 1
        request = lookups.LookupRequest(uuid.uuid4().hex, (fleet_index(*current, CNIC),),
                                        "reception-9")
        with db.transaction() as tx:
            assert lookups.answer(tx, node.node_id, request, utc_now()) == "found"
        assert fleet_keys.rotate(db)["reindexed"] == 2  # fleet rotation under the new key
    finally:
        db.close()
    shown = CliRunner().invoke(hq_cli, ["--db", env.hq_url, "citizen", "show", "--id",
                                        made[0]["id"], "--actor", "analyst-7", "--purpose",
                                        "after rotation", "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["name"] == NAME
    reads = CliRunner().invoke(hq_cli, ["--db", env.hq_url, "citizen", "reads", "--json"])
    assert "after rotation" in reads.output
    assert pii.encrypt(pii.field_key(running), "citizens", "name_enc", "x").startswith("h2:")
    running.close()


def test_rotation_on_an_empty_store_and_twice(own_key: Path, hq_url: str) -> None:
    """Nothing held yet: the key still rotates; a second rotation moves to version 3."""
    db = HQDatabase(hq_url)
    try:
        assert pii_rotate.rotate(db)["version"] == 2
        assert pii_rotate.rotate(db) == {"version": 3, "reencrypted": 0, "retired": [2]}
        with pytest.raises(ValueError, match="batch size"):
            pii_rotate.rotate(db, batch=0)
    finally:
        db.close()
    path = key_file(hq_url, own_key)
    assert list(pii_keys.load(path, create=False).keys) == [3]
    HQDatabase(hq_url).close()
