"""Merge rules: every order of the same changes, with duplicates, converges."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sync.changes import Op
from sync.merge import APPLICATION_RANKS, Conflict, State, merge, policy_for

NODES = ["NAAAAA", "NBBBBB", "NCCCCC"]
Change = tuple[str, str | None, str]  # op, data json, hlc
RowChange = tuple[Op, Mapping[str, Any] | None, str]  # op, row data (None: delete), hlc


def hlc(wall: int, counter: int, node: str) -> str:
    """An HLC string."""
    return f"{wall:015d}-{counter:05d}-{node}"


def apply_all(table: str, changes: Sequence[RowChange]) -> tuple[
        dict[str, Any] | None, set[tuple[str, str]]]:
    """Fold changes into one state; return the visible row and its conflicts."""
    state, found = State(), list[Conflict]()
    for op, data, clock in changes:
        state, found = merge(state, policy_for(table), op, data, clock)
    conflicts = {(c.column, c.clock) for c in found}
    restored = State.from_json(state.to_json())
    assert restored == state
    return state.visible(), conflicts


def unique_clocks(changes: list[Any]) -> list[Any]:
    """Real writes never share an HLC: make the counter part unique per change."""
    out = []
    for i, (op, data, clock) in enumerate(changes):
        wall, _, node = clock.split("-")
        fresh = hlc(int(wall), i, node)
        if data and "field_hlc" in data:
            fields = json.loads(data["field_hlc"])
            data = {**data, "field_hlc": json.dumps(
                {f: {"hlc": fresh, "base": v["base"]} for f, v in fields.items()})}
        out.append((op, data, fresh))
    return out


citizen_edit = st.builds(
    lambda wall, node, name, phone, fields, base: (
        "update",
        {"id": "c1", "name_enc": name, "phone_enc": phone,
         "field_hlc": json.dumps({f: {"hlc": hlc(wall, 0, node), "base": base}
                                  for f in fields})},
        hlc(wall, 0, node)),
    st.integers(1, 50), st.sampled_from(NODES),
    st.sampled_from(["a", "b", "c"]), st.sampled_from(["1", "2"]),
    st.sets(st.sampled_from(["name_enc", "phone_enc"]), min_size=1),
    st.sampled_from([None, hlc(0, 0, "NAAAAA"), hlc(30, 0, "NBBBBB")]),
)
application_edit = st.builds(
    lambda wall, node, status, note: (
        "update", {"id": "a1", "status": status, "notes": note}, hlc(wall, 0, node)),
    st.integers(1, 50), st.sampled_from(NODES),
    st.sampled_from(sorted(APPLICATION_RANKS)), st.sampled_from(["x", "y", None]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(citizen_edit, min_size=1, max_size=8), st.randoms())
def test_citizen_edits_converge_in_any_order(changes: list[Any], rnd: Any) -> None:
    """Shuffled and duplicated delivery gives the same row and the same conflicts."""
    changes = unique_clocks(changes)
    expected, expected_conflicts = apply_all("citizens", changes)
    shuffled = changes + rnd.sample(changes, k=len(changes) // 2)
    rnd.shuffle(shuffled)
    assert apply_all("citizens", shuffled) == (expected, expected_conflicts)


@settings(max_examples=300, deadline=None)
@given(st.lists(application_edit, min_size=1, max_size=8), st.randoms())
def test_application_status_converges_and_never_goes_back(changes: list[Any],
                                                          rnd: Any) -> None:
    """Any order gives the same state, and the status rank only rises while applying."""
    changes = unique_clocks(changes)
    expected, _ = apply_all("applications", changes)
    shuffled = list(changes) * 2
    rnd.shuffle(shuffled)
    state, rank = State(), -1
    for op, data, clock in shuffled:
        state, _ = merge(state, policy_for("applications"), op, data, clock)
        new_rank = APPLICATION_RANKS[state.values["status"]]
        assert new_rank >= rank
        rank = new_rank
    assert state.visible() == expected
    assert rank == max(APPLICATION_RANKS[d["status"]] for _, d, _ in changes)


def test_concurrent_citizen_edit_is_kept_as_conflict() -> None:
    """Two nodes rename the same citizen: the later wins, the other is a conflict."""
    base = hlc(1, 0, "NAAAAA")
    a: RowChange = ("update", {"id": "c1", "name_enc": "A", "field_hlc": json.dumps(
        {"name_enc": {"hlc": hlc(10, 0, "NAAAAA"), "base": base}})}, hlc(10, 0, "NAAAAA"))
    b: RowChange = ("update", {"id": "c1", "name_enc": "B", "field_hlc": json.dumps(
        {"name_enc": {"hlc": hlc(11, 0, "NBBBBB"), "base": base}})}, hlc(11, 0, "NBBBBB"))
    for order in ([a, b], [b, a]):
        row, conflicts = apply_all("citizens", order)
        assert row is not None and row["name_enc"] == "B"
        assert conflicts == {("name_enc", hlc(10, 0, "NAAAAA"))}


def test_edits_of_different_fields_both_survive() -> None:
    """Per-field clocks: a name edit on one node and a phone edit on another both stay."""
    one = hlc(1, 0, "NAAAAA")
    a: RowChange = ("update", {"id": "c1", "name_enc": "new-name", "phone_enc": "old", "field_hlc":
                    json.dumps({"name_enc": {"hlc": hlc(20, 0, "NAAAAA"), "base": one},
                                "phone_enc": {"hlc": one, "base": None}})},
         hlc(20, 0, "NAAAAA"))
    b: RowChange = ("update", {"id": "c1", "name_enc": "old-name", "phone_enc": "new", "field_hlc":
                    json.dumps({"name_enc": {"hlc": one, "base": None},
                                "phone_enc": {"hlc": hlc(21, 0, "NBBBBB"), "base": one}})},
         hlc(21, 0, "NBBBBB"))
    for order in ([a, b], [b, a]):
        row, conflicts = apply_all("citizens", order)
        assert row is not None
        assert (row["name_enc"], row["phone_enc"]) == ("new-name", "new")
        assert conflicts == set()


def test_owned_rows_last_write_wins_and_delete_tombstones() -> None:
    """Node-owned tables keep the newest version; a later delete hides the row."""
    v1: RowChange = ("insert", {"id": "t1", "status": "waiting"}, hlc(1, 0, "NAAAAA"))
    v2: RowChange = ("update", {"id": "t1", "status": "done"}, hlc(2, 0, "NAAAAA"))
    gone: RowChange = ("delete", None, hlc(3, 0, "NAAAAA"))
    assert apply_all("tickets", [v2, v1])[0] == {"id": "t1", "status": "done"}
    assert apply_all("tickets", [gone, v1, v2])[0] is None
