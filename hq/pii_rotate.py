"""`edge-hq pii-key rotate`: move every PII value HQ holds to a new version of its field key.

1. Begin: the key file gains version N+1 beside N (written atomically, 0600) and
   the store switches to it (`hq_meta.pii_key_id`): from then on every process
   encrypts new values under N+1 (hq/pii_keys.py `fresh`), and reads accept both.
2. Re-encrypt, in batches of records, each batch one transaction: the fleet keys
   (`hq_fleet_keys.key_enc`), then for each table with PII (sync/pii.py) the merge
   state (`hq_records.state`: values and overwritten values; `row_json`), the
   kept conflicts (`hq_conflicts.value_json`) and the projection (`hq_<table>`).
   A value already under N+1 is left alone, so a rotation interrupted anywhere is
   finished by running the command again (step 1 is then skipped: the file still
   holds two versions). Passes repeat until one finds nothing older.
3. Retire: the key file is rewritten with N+1 alone; nothing HQ holds needs N.
"""

from __future__ import annotations

import functools
import json
import secrets
from collections.abc import Callable
from typing import Any

from hq import pii, pii_keys
from hq.dbapi import Tx
from hq.pii_keys import Keyring
from hq.projections import PROJECTIONS
from hq.store import HQDatabase
from sync.merge import State
from sync.pii import PII_FIELDS

BATCH = 500
MAX_PASSES = 5
Progress = Callable[[str, int, int], None]


class Interrupted(RuntimeError):
    """The rotation stopped after the batches it was allowed (tests; resumed by rerunning)."""


def begin(db: HQDatabase) -> Keyring:
    """The key file with the new version added (or as left by an unfinished rotation),
    and the store switched to that version."""
    ring = pii.field_key(db)
    held = pii_keys.load(ring.path, create=False)
    if len(held.keys) == 1:
        keys = {**held.keys, held.current + 1: secrets.token_bytes(pii_keys.KEY_BYTES)}
        held = Keyring(held.path, keys)
        pii_keys.save(held)

    def run(tx: HQDatabase) -> None:
        pii_keys.bind(tx, held)
        pii_keys.switch(tx, held)
    db.retrying(run)
    db.pii_keys = held
    return held


def _renew(ring: Keyring, table: str, column: str, value: Any) -> tuple[Any, bool]:
    """`value` re-encrypted under the current version when HQ holds it under an older one."""
    version = pii.version_of(value)
    if version is None or version == ring.current:
        return value, False
    return pii.encrypt(ring, table, column, pii.decrypt(ring, table, column, value)), True


def _renew_fleet_keys(tx: Tx, ring: Keyring) -> int:
    """The wrapped fleet keys; returns how many were re-encrypted."""
    done = 0
    for version, wrapped in tx.execute("SELECT version, key_enc FROM hq_fleet_keys WHERE "
                                       "key_enc IS NOT NULL ORDER BY version").fetchall():
        new, changed = _renew(ring, "hq_fleet_keys", "key", wrapped)
        if changed:
            tx.execute("UPDATE hq_fleet_keys SET key_enc = ? WHERE version = ?", [new, version])
            done += 1
    return done


def _renew_state(ring: Keyring, table: str, text: str) -> tuple[str, bool]:
    """A merge state's PII values and overwritten values, re-encrypted."""
    state, changed = State.from_json(text), False
    for column in PII_FIELDS[table]:
        if column in state.values:
            state.values[column], moved = _renew(ring, table, column, state.values[column])
            changed |= moved
        for clock, value in list(state.losers.get(column, {}).items()):
            state.losers[column][clock], moved = _renew(ring, table, column, value)
            changed |= moved
    return state.to_json(), changed


def _renew_row(ring: Keyring, table: str, text: str | None) -> tuple[str | None, bool]:
    """A visible row's (row_json) PII values, re-encrypted."""
    if text is None:
        return None, False
    row, changed = json.loads(text), False
    for column in PII_FIELDS[table]:
        if column in row:
            row[column], moved = _renew(ring, table, column, row[column])
            changed |= moved
    return (json.dumps(row, sort_keys=True, ensure_ascii=False) if changed else text), changed


def _renew_record(tx: Tx, ring: Keyring, table: str, pk: str, state: str,
                  row_json: str | None) -> int:
    """One record everywhere HQ keeps it; returns the places rewritten."""
    new_state, state_moved = _renew_state(ring, table, state)
    new_row, row_moved = _renew_row(ring, table, row_json)
    done = 0
    if state_moved or row_moved:
        tx.execute("UPDATE hq_records SET state = ?, row_json = ? WHERE tbl = ? AND pk = ?",
                   [new_state, new_row, table, pk])
        done += 1
    columns = list(PII_FIELDS[table])
    for col, clock, value_json in tx.execute(
            "SELECT col, clock, value_json FROM hq_conflicts WHERE tbl = ? AND pk = ?",
            [table, pk]).fetchall():
        if col in columns and value_json is not None:
            new, moved = _renew(ring, table, col, json.loads(value_json))
            if moved:
                tx.execute("UPDATE hq_conflicts SET value_json = ? WHERE tbl = ? AND pk = ? "
                           "AND col = ? AND clock = ?", [json.dumps(new), table, pk, col, clock])
                done += 1
    projection = PROJECTIONS.get(table)
    if projection is not None:
        quoted = ", ".join(f'"{c}"' for c in columns)
        found = tx.execute(f"SELECT {quoted} FROM {projection.table} WHERE id = ?",
                           [pk]).fetchone()
        if found is not None:
            renewed = [_renew(ring, table, c, v) for c, v in zip(columns, found, strict=True)]
            if any(moved for _, moved in renewed):
                sets = ", ".join(f'"{c}" = ?' for c in columns)
                tx.execute(f"UPDATE {projection.table} SET {sets} WHERE id = ?",
                           [*(v for v, _ in renewed), pk])
                done += 1
    return done


def _batch(tx: HQDatabase, ring: Keyring, table: str, after: str,
           size: int) -> tuple[int, int, str]:
    """One batch of records after `after` (caller's transaction): (records, places
    re-encrypted, the last pk)."""
    rows = tx.execute("SELECT pk, state, row_json FROM hq_records WHERE tbl = ? AND pk > ? "
                      "ORDER BY pk LIMIT ?" + tx.lock_clause(), [table, after, size]).fetchall()
    moved = sum(_renew_record(tx, ring, table, *row) for row in rows)
    return len(rows), moved, rows[-1][0] if rows else after


def _pass(db: HQDatabase, ring: Keyring, batch: int, budget: list[int],
          progress: Progress | None) -> int:
    """One pass over everything HQ holds; returns the places re-encrypted. Each batch is
    one transaction; `budget[0]` batches may run (negative: no limit)."""
    done = db.retrying(lambda tx: _renew_fleet_keys(tx, ring))
    for table in sorted(PII_FIELDS):
        total = int(db.execute("SELECT count(*) FROM hq_records WHERE tbl = ?",
                               [table]).fetchone()[0])
        last, seen = "", 0
        while True:
            if budget[0] == 0:
                raise Interrupted("stopped after the batches allowed; run it again to finish")
            budget[0] -= 1
            count, moved, last = db.retrying(functools.partial(
                _batch, ring=ring, table=table, after=last, size=batch))
            done, seen = done + moved, seen + count
            if progress:
                progress(table, seen, total)
            if count < batch:
                break
    return done


def rotate(db: HQDatabase, batch: int = BATCH, progress: Progress | None = None,
           max_batches: int = -1) -> dict[str, Any]:
    """Rotate (or finish rotating) HQ's field key; returns the new version, the values
    re-encrypted and the version retired. `max_batches` stops early (Interrupted)."""
    if batch < 1:
        raise ValueError("the batch size must be at least 1")
    ring = begin(db)
    old = sorted(v for v in ring.keys if v != ring.current)
    budget, total = [max_batches], 0
    for _ in range(MAX_PASSES):
        moved = _pass(db, ring, batch, budget, progress)
        total += moved
        if moved == 0:
            pii_keys.save(Keyring(ring.path, {ring.current: ring.keys[ring.current]}))
            db.pii_keys = pii_keys.load(ring.path, create=False)
            return {"version": ring.current, "reencrypted": total, "retired": old}
    raise pii_keys.PIIKeyError("values under the old key kept arriving; run the rotation "
                               "again (the old key is kept until nothing needs it)")
