"""Merge rules: deterministic, commutative, associative, idempotent.

Every record kept at HQ is a *state*: field values, each with the clock (HLC
string, which ends in the node id, so it totally orders concurrent writes) of
the write that set it, plus an optional tombstone clock. Merging an incoming
change keeps, per field, the value with the greater clock — a join
semilattice, so any order of the same changes, duplicates included, gives the
same state. Policies per table (DESIGN.md "Ownership and merge"):

- `owned`: written by the origin node only: all fields share the change's clock.
- `field_lww`: any node writes (citizen profiles): per-field clocks come from
  the row's `field_hlc` map, `{"col": {"hlc": clock, "base": clock-it-replaced}}`.
  A value that the winning write never saw (its clock is not the winner's
  base, and vice versa) was a concurrent edit: it is reported as a conflict
  for review. Without a base, edits from two different nodes count as concurrent.
- `lattice`: like `owned`, but the lattice field (application status) only
  moves up its ranks; the clock breaks ties between equal ranks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from sync.changes import Op

FIELD_CLOCKS = "field_hlc"
# Bookkeeping columns differ between any two edits; a differing value there is no conflict.
NOT_CONFLICTS = frozenset({"id", "created_at", "updated_at", FIELD_CLOCKS})

# The policies of the module docstring.
MergeKind = Literal["owned", "field_lww", "lattice"]


@dataclass(frozen=True)
class Policy:
    """How one table merges, and the table's other facts that HQ acts on.

    `cross_node_writable`: any node may write a row, so a record's HLC may name
    another node than its sender (citizen profiles); elsewhere that is refused.
    `hash_chained`: rows are entries of the node's hash-chained audit log, which
    HQ indexes to verify the chain.
    """

    kind: MergeKind
    lattice_field: str | None = None
    ranks: Mapping[str, int] = field(default_factory=dict)
    cross_node_writable: bool = False
    hash_chained: bool = False


# The application status lattice, defined once: the domain (edge_node/domain/applications.py)
# moves a status only up these ranks, and HQ's merge keeps the higher rank.
APPLICATION_STATUSES = ("submitted", "in_review", "ready", "rejected", "collected")
APPLICATION_RANKS: Mapping[str, int] = MappingProxyType(
    {"submitted": 0, "in_review": 1, "ready": 2, "rejected": 2, "collected": 3})
# Who may set each application status (DESIGN.md "Decisions"): the center (the node's own
# API and screens) or the agency back office, whose decision reaches the node through HQ.
# Both ends enforce it: the node refuses a center move to a back-office status and a
# downstream decision to a center status; HQ refuses to send a decision it could not apply.
CENTER, BACK_OFFICE = "center", "back_office"
APPLICATION_STATUS_SETTERS: Mapping[str, str] = MappingProxyType({
    "submitted": CENTER, "in_review": CENTER, "ready": BACK_OFFICE, "rejected": BACK_OFFICE,
    "collected": CENTER})
REASON_REQUIRED = frozenset({"rejected"})  # a back-office decision that must say why
DECISION_REASON_MAX = 300  # characters of a decision's reason (shown and printed at the center)
POLICIES: dict[str, Policy] = {
    "citizens": Policy("field_lww", cross_node_writable=True),
    "applications": Policy("lattice", "status", APPLICATION_RANKS),
    "audit_log": Policy("owned", hash_chained=True),
}
OWNED = Policy("owned")
# The tables a node may write (DESIGN.md "Ownership and merge"): everything else — catalog,
# staff accounts, center config, revocations — is HQ's, and HQ refuses it from a node.
NODE_WRITABLE: frozenset[str] = frozenset({
    "citizens", "visits", "tickets", "ticket_services", "ticket_events", "counters",
    "applications", "feedback", "volunteers", "volunteer_shifts", "audit_log",
    "kpi_snapshots",
})


def decision_problem(status: Any, reason: Any) -> tuple[str, str] | None:
    """Why a back-office decision (status, reason) is not acceptable: (code, text), or None.

    The status must be one the back office sets; a reason, when given, is 1 to
    DECISION_REASON_MAX printable characters; REASON_REQUIRED statuses need one.
    The text quotes no reason (it may name a person).
    """
    if status not in APPLICATION_STATUS_SETTERS:
        return "unknown_status", f"status must be one of {', '.join(APPLICATION_STATUSES)}"
    if APPLICATION_STATUS_SETTERS[status] != BACK_OFFICE:
        return "center_status", f"{status} is set by the center, not by a back-office decision"
    if reason is None:
        if status in REASON_REQUIRED:
            return "missing_reason", f"a {status} decision needs a reason"
        return None
    if not isinstance(reason, str) or not reason.strip() or len(reason) > DECISION_REASON_MAX \
            or not reason.isprintable():
        return "bad_reason", (f"a reason must be 1 to {DECISION_REASON_MAX} printable "
                              "characters on one line")
    return None


def policy_for(table: str) -> Policy:
    """The policy of `table` (node-owned unless listed)."""
    return POLICIES.get(table, OWNED)


def hash_chained_tables() -> list[str]:
    """The tables whose rows are hash-chained audit entries (sorted)."""
    return sorted(name for name, pol in POLICIES.items() if pol.hash_chained)


def node_writes(table: str) -> bool:
    """Whether a node may send records of `table` (HQ-owned tables are never accepted)."""
    return table in NODE_WRITABLE


LOSERS_KEPT = 20  # overwritten values remembered per field, for conflict review


@dataclass
class State:
    """What HQ holds for one (table, pk).

    `losers[field]` maps the clock of each overwritten value to the value, so
    conflicts are a function of the *set* of writes, not of their order.
    """

    values: dict[str, Any] = field(default_factory=dict)
    clocks: dict[str, str] = field(default_factory=dict)
    tombstone: str | None = None
    bases: dict[str, str | None] = field(default_factory=dict)
    losers: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> str:
        """Storage form."""
        return json.dumps({"v": self.values, "c": self.clocks, "t": self.tombstone,
                           "b": self.bases, "l": self.losers}, sort_keys=True,
                          ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | None) -> State:
        """Inverse of `to_json`; None gives an empty state."""
        if not text:
            return cls()
        raw = json.loads(text)
        return cls(raw["v"], raw["c"], raw["t"], raw.get("b", {}), raw.get("l", {}))

    def visible(self) -> dict[str, Any] | None:
        """The row as readers see it: None when deleted after its newest field write."""
        newest = max(self.clocks.values(), default="")
        if self.tombstone is not None and self.tombstone >= newest:
            return None
        return dict(self.values)


@dataclass(frozen=True)
class Conflict:
    """A concurrent value from another node that lost (kept for review at HQ)."""

    column: str
    value: Any
    clock: str
    winner_clock: str


def _node_of(clock: str) -> str:
    """The node id at the end of an HLC string."""
    return clock.split("-", 2)[2] if clock.count("-") >= 2 else ""


def _field_clocks(data: Mapping[str, Any], hlc: str,
                  pol: Policy) -> dict[str, tuple[str, str | None]]:
    """(clock, base clock) of each field of an incoming row."""
    clocks: dict[str, tuple[str, str | None]] = {
        name: (hlc, None) for name in data if name != FIELD_CLOCKS}
    if pol.kind != "field_lww" or not isinstance(data.get(FIELD_CLOCKS), str):
        return clocks
    try:
        given = json.loads(data[FIELD_CLOCKS])
    except json.JSONDecodeError:
        return clocks
    for name, entry in given.items() if isinstance(given, dict) else ():
        if name in clocks and isinstance(entry, dict) and isinstance(entry.get("hlc"), str):
            base = entry.get("base")
            clocks[name] = (entry["hlc"], base if isinstance(base, str) else None)
    return clocks


def incoming_clocks(data: Mapping[str, Any], hlc: str, pol: Policy) -> dict[str, str]:
    """The clock each field of an incoming row carries (what `merge` compares)."""
    return {name: clock for name, (clock, _) in _field_clocks(data, hlc, pol).items()}


def _wins(pol: Policy, name: str, new: Any, new_clock: str, old: Any, old_clock: str) -> bool:
    """Whether the incoming value of one field replaces the stored one."""
    if pol.kind == "lattice" and name == pol.lattice_field:
        new_rank, old_rank = pol.ranks.get(new, -1), pol.ranks.get(old, -1)
        if new_rank != old_rank:
            return new_rank > old_rank
    return new_clock > old_clock


def merge(state: State, pol: Policy, op: Op, data: Mapping[str, Any] | None,
          hlc: str) -> tuple[State, list[Conflict]]:
    """Apply one change to a state; returns the new state and its current conflicts."""
    out = State(dict(state.values), dict(state.clocks), state.tombstone, dict(state.bases),
                {k: dict(v) for k, v in state.losers.items()})
    if op == "delete" or data is None:
        out.tombstone = hlc if state.tombstone is None else max(state.tombstone, hlc)
        return out, conflicts_of(out)
    for name, (clock, base) in _field_clocks(data, hlc, pol).items():
        new, old_clock = data[name], out.clocks.get(name)
        if old_clock is not None and old_clock == clock:
            continue  # a duplicate of the write we hold
        if old_clock is None or _wins(pol, name, new, clock, out.values[name], old_clock):
            if old_clock is not None and pol.kind == "field_lww":
                _remember(out, name, old_clock, out.values[name])
            out.values[name], out.clocks[name], out.bases[name] = new, clock, base
        elif pol.kind == "field_lww":
            _remember(out, name, clock, new)
    if FIELD_CLOCKS in data:
        out.values[FIELD_CLOCKS] = json.dumps(out.clocks, sort_keys=True)
    return out, conflicts_of(out)


def _remember(state: State, name: str, clock: str, value: Any) -> None:
    """Keep an overwritten value (newest LOSERS_KEPT per field)."""
    if name in NOT_CONFLICTS:
        return
    kept = state.losers.setdefault(name, {})
    kept[clock] = value
    for old in sorted(kept)[:-LOSERS_KEPT]:
        del kept[old]


def conflicts_of(state: State) -> list[Conflict]:
    """Overwritten values that the current winner of their field never saw."""
    found = []
    for name, kept in sorted(state.losers.items()):
        winner, clock, base = state.values[name], state.clocks[name], state.bases.get(name)
        for loser_clock, value in sorted(kept.items()):
            if value == winner:
                continue
            seen = (base >= loser_clock if base is not None
                    else _node_of(loser_clock) == _node_of(clock))
            if not seen:
                found.append(Conflict(name, value, loser_clock, clock))
    return found
