"""HQ queries over typed projections vs today's JSON documents, on PostgreSQL.

A store of `--records` merge-state records from `--centers` simulated centers
(one node each) is loaded into a throwaway schema, then three HQ questions are
asked of the typed projections (hq/projections.py) and of `hq_records`'
JSON rows, interleaved in the same run with the same parameters:

- inbox:   one agency's open applications (submitted / in review), oldest first, 100;
- history: one citizen's visits and applications at every center, by `cnic_index`;
- kpi:     one center's day: tickets, done, no-shows, applications, feedback and rating.

Both sides must return the same rows (checked every repeat). Loading goes
through the product's code: each record is merged with `sync.merge` (as
ingest does) and projected with `hq.projections.values`, then COPYed; a sample
is also applied record by record with `hq.ingest.apply_record` into a second
schema and must give identical merge state and projection rows.

    .venv/bin/python -m bench.hq_queries                  # 1,000,000 records (~10 min)
    .venv/bin/python -m bench.hq_queries --records 20000  # quick run, prints only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from hq import projections
from hq.ingest import apply_record
from hq.store import HQDatabase
from sync.merge import State, merge, policy_for

PG_URL = os.environ.get("KHIDMAT_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
RESULTS = Path(__file__).resolve().parent / "results" / "hq_queries.json"
FULL_RECORDS = 1_000_000
AGENCIES = ("nadra", "dgip", "police", "ict", "mci", "cda", "excise", "fbr", "iesco", "sngpl",
            "mofa", "fbise")
DAYS = 10
FIRST_DAY = date(2025, 3, 3)
OPEN = ("submitted", "in_review")
INBOX_LIMIT = 100
AIM_P95_MS, AIM_RATIO = 100.0, 10.0
Row = tuple[Any, ...]


# --- the simulated fleet ----------------------------------------------------------------------
@dataclass
class Center:
    """One center with one node: its clock and the citizens registered there."""

    index: int
    rng: random.Random
    clock: int = 1_741_000_000_000
    citizens: list[str] = field(default_factory=list)

    @property
    def center_id(self) -> str:
        """`C001`…"""
        return f"C{self.index:03d}"

    @property
    def node_id(self) -> str:
        """`NB0001`…"""
        return f"NB{self.index:04d}"

    def hlc(self) -> str:
        """The node's next HLC string."""
        self.clock += 1 + self.rng.randrange(5)
        return f"{self.clock:015d}-00000-{self.node_id}"

    def uid(self) -> str:
        """A UUID-shaped id, reproducible from the seed."""
        return str(uuid.UUID(int=self.rng.getrandbits(128)))


def cnic_index(person: int) -> str:
    """Stand-in for the fleet blind index: the same person has the same index everywhere."""
    return uuid.uuid5(uuid.NAMESPACE_OID, f"person-{person}").hex * 2


def visit_records(c: Center, people: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """The node-table rows one visit produces, as (table, row)."""
    rng = c.rng
    day = (FIRST_DAY + timedelta(days=rng.randrange(DAYS))).isoformat()
    at = f"{day}T{4 + rng.randrange(8):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}Z"
    citizen_id = None
    if rng.random() < 0.7:
        if not c.citizens or rng.random() < 0.5:
            citizen_id = c.uid()
            c.citizens.append(citizen_id)
            yield "citizens", {"id": citizen_id, "cnic_index": cnic_index(rng.randrange(people)),
                               "cnic_enc": "v1:" + c.uid(), "name_enc": "v1:" + c.uid(),
                               "phone_enc": None, "id_kind": "cnic", "created_at": at,
                               "updated_at": at, "field_hlc": "{}"}
        else:
            citizen_id = rng.choice(c.citizens)
    agency = rng.choice(AGENCIES)
    service = f"{agency}_service_{rng.randrange(3)}"
    done = rng.random() < 0.85
    visit_id, ticket_id = c.uid(), c.uid()
    yield "visits", {"id": visit_id, "citizen_id": citizen_id, "business_date": day,
                     "priority": "normal", "status": "closed" if done else "open",
                     "services": json.dumps([service]), "missing_documents": "[]",
                     "created_by": "staff-1", "created_at": at, "closed_at": at if done else None}
    number = rng.randrange(1, 400)
    status = "done" if done else rng.choice(("waiting", "no_show"))
    yield "tickets", {"id": ticket_id, "visit_id": visit_id, "number": f"A-{number:03d}",
                      "queue_prefix": "A", "daily_number": number, "business_date": day,
                      "priority": "normal", "priority_weight": 0, "status": status,
                      "queue_code": agency, "service_code": service, "counter_id": None,
                      "staff_id": None, "target_counter_id": None, "enqueued_at": at,
                      "order_key": number, "called_at": at if done else None,
                      "recall_count": 0, "rejoin_until": None, "hold_reason": None,
                      "issued_at": at, "updated_at": at, "completed_at": at if done else None}
    yield "ticket_services", {"id": c.uid(), "ticket_id": ticket_id, "position": 0,
                              "service_code": service, "queue_code": agency, "status": status,
                              "enqueued_at": at, "called_at": None, "completed_at": None,
                              "counter_id": None, "staff_id": None}
    for event in ("issued", "completed") if done else ("issued",):
        yield "ticket_events", {"id": c.uid(), "ticket_id": ticket_id, "event": event,
                                "service_code": service, "queue_code": agency,
                                "counter_id": None, "staff_id": "staff-1", "at": at,
                                "detail": "{}"}
    if citizen_id and rng.random() < 0.35:
        yield "applications", {
            "id": c.uid(), "reference": f"{c.center_id}-{c.node_id}-{day}-{c.uid()[:8]}",
            "ticket_id": ticket_id, "citizen_id": citizen_id, "service_code": service,
            "agency_code": agency, "agency_reference": None, "fee_reference": None,
            "documents_seen": "[]", "status": rng.choice(("submitted", "in_review", "ready",
                                                          "rejected", "collected")),
            "status_hlc": None, "created_by": "staff-1", "created_at": at, "updated_at": at,
            "notes": None}
    if done and rng.random() < 0.3:
        yield "feedback", {"id": c.uid(), "ticket_id": ticket_id, "rating": rng.randint(1, 5),
                           "comment": None, "service_code": service, "counter_id": None,
                           "staff_id": None, "created_at": at}
    yield "audit_log", {"id": c.uid(), "seq": c.clock, "at": at, "actor_id": "staff-1",
                        "actor_role": "receptionist", "action": "visit.create",
                        "entity": "visit", "entity_id": visit_id, "detail": "{}",
                        "prev_hash": "0" * 64, "hash": "1" * 64}


def fleet_records(records: int, centers: int, seed: int, people: int
                  ) -> Iterator[tuple[Center, str, dict[str, Any], str]]:
    """(center, table, row, hlc) until `records`, spread evenly over the centers; citizens
    are drawn from `people` persons, so some are registered at several centers."""
    each, made = -(-records // centers), 0
    for i in range(centers):
        c, mine = Center(i + 1, random.Random(seed * 100_003 + i)), 0
        while mine < each and made < records:
            for table, row in visit_records(c, people):
                if mine == each or made == records:
                    break
                yield c, table, row, c.hlc()
                mine, made = mine + 1, made + 1


def people(args: argparse.Namespace) -> int:
    """How many persons the fleet's citizens are drawn from."""
    return max(int(args.records) // 20, 10)


# --- loading ----------------------------------------------------------------------------------
@contextmanager
def schema(name: str) -> Iterator[str]:
    """A throwaway PostgreSQL schema; yields a URL whose search_path is it."""
    import psycopg

    admin = psycopg.connect(PG_URL, autocommit=True)
    admin.execute(f"CREATE SCHEMA {name}")
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{name}"
    finally:
        admin.execute(f"DROP SCHEMA {name} CASCADE")
        admin.close()


def merged(table: str, row: dict[str, Any], hlc: str) -> tuple[str, str]:
    """(state JSON, visible row JSON) as ingest stores them for a first insert."""
    state, _ = merge(State(), policy_for(table), "insert", row, hlc)
    return state.to_json(), json.dumps(state.visible(), sort_keys=True, ensure_ascii=False)


def copy_rows(db: HQDatabase, table: str, columns: tuple[str, ...], rows: list[Row]) -> None:
    """COPY rows into a table."""
    cols = ", ".join(f'"{c}"' for c in columns)
    with db.conn.cursor() as cur, cur.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def add_nodes(db: HQDatabase, centers: int) -> None:
    """One node per center in hq_nodes (the projection's center comes from here)."""
    with db.transaction() as tx:
        for i in range(1, centers + 1):
            c = Center(i, random.Random(0))
            tx.execute("INSERT INTO hq_nodes (node_id, center_id, cert_pem, enrolled_at) "
                       "VALUES (?, ?, 'bench', '2025-03-01')", [c.node_id, c.center_id])


def load(db: HQDatabase, args: argparse.Namespace, say: Callable[[str], None]) -> None:
    """Bulk-load the merge state and its projections (COPY, in chunks)."""
    add_nodes(db, args.centers)
    records: list[Row] = []
    projected: dict[str, list[Row]] = {name: [] for name in projections.PROJECTIONS}
    done, started = 0, time.monotonic()

    def flush() -> None:
        copy_rows(db, "hq_records", ("tbl", "pk", "origin", "state", "row_json", "hlc",
                                     "updated_at"), records)
        for name, rows in projected.items():
            p = projections.PROJECTIONS[name]
            copy_rows(db, p.table, p.names, rows)
            rows.clear()
        records.clear()

    for c, table, row, hlc in fleet_records(args.records, args.centers, args.seed,
                                                people(args)):
        state_json, row_json = merged(table, row, hlc)
        records.append((table, row["id"], c.node_id, state_json, row_json, hlc,
                        "2025-03-13T00:00:00.000000Z"))
        p = projections.PROJECTIONS[table]
        projected[table].append(projections.values(p, row["id"], c.node_id, c.center_id,
                                                   json.loads(row_json), hlc))
        done += 1
        if len(records) == 50_000:
            flush()
            say(f"loaded {done:,}/{args.records:,} records ({time.monotonic() - started:.0f} s)")
    flush()
    with db.transaction() as tx:  # the person links ingest keeps row by row, set in one pass
        projections.link_persons(tx, None, [])
    db.execute("ANALYZE")
    say(f"loaded {done:,} records in {time.monotonic() - started:.0f} s")


def _difference(mine: list[Any], theirs: list[Any]) -> str:
    """Which positions of the first rows differ (values left out: they may be PII)."""
    if not mine or not theirs:
        return f"{len(mine)} row(s) bulk-loaded, {len(theirs)} through ingest"
    return "columns " + ", ".join(str(i) for i, (a, b) in enumerate(zip(mine[0], theirs[0],
                                                                         strict=False)) if a != b)


def check_sample(db: HQDatabase, sample: int, args: argparse.Namespace) -> int:
    """Apply the first `sample` records through ingest's apply_record in a second schema;
    their merge state and projection rows must equal the bulk-loaded ones."""
    keys: list[tuple[str, str]] = []
    with schema(f"bench_chk_{uuid.uuid4().hex[:8]}") as url:
        check = HQDatabase(url)
        try:
            add_nodes(check, args.centers)
            with check.transaction() as tx:
                for c, table, row, hlc in fleet_records(sample, 1, args.seed, people(args)):
                    record = {"tbl": table, "pk": row["id"], "op": "insert", "data": row,
                              "hlc": hlc}
                    apply_record(tx, c.node_id, record, "2025-03-13T00:00:00.000000Z")
                    keys.append((table, row["id"]))
            for table, pk in keys:
                q = "SELECT origin, state, row_json, hlc FROM hq_records WHERE tbl = ? AND pk = ?"
                p = projections.PROJECTIONS[table]
                # person_id links a citizen to others of the store, which the sample lacks
                proj = f"SELECT {', '.join(p.names)} FROM {p.table} WHERE id = ?"
                for sql, params in ((q, [table, pk]), (proj, [pk])):
                    mine = db.execute(sql, params).fetchall()
                    theirs = check.execute(sql, params).fetchall()
                    if mine != theirs or not mine:
                        raise SystemExit(f"bulk load differs from ingest for {table} {pk}: "
                                         f"{_difference(mine, theirs)}")
        finally:
            check.close()
    return len(keys)


# --- the queries ------------------------------------------------------------------------------
def _json(tbl: str) -> str:
    """Today's JSON documents of one table, with the origin node's center."""
    return (f"(SELECT r.pk, n.center_id, r.row_json::jsonb AS j FROM hq_records r "
            f"JOIN hq_nodes n ON n.node_id = r.origin WHERE r.tbl = '{tbl}' "
            f"AND r.row_json IS NOT NULL)")


OPEN_SQL = ", ".join(f"'{s}'" for s in OPEN)
QUERIES: dict[str, tuple[str, str]] = {
    "inbox": (
        "SELECT id, reference, center_id, service_code, status, created_at "
        f"FROM hq_applications WHERE agency_code = ? AND status IN ({OPEN_SQL}) "
        f"ORDER BY created_at, id LIMIT {INBOX_LIMIT}",
        "SELECT pk, j->>'reference', center_id, j->>'service_code', j->>'status', "
        f"j->>'created_at' FROM {_json('applications')} a WHERE j->>'agency_code' = ? "
        f"AND j->>'status' IN ({OPEN_SQL}) ORDER BY j->>'created_at', pk LIMIT {INBOX_LIMIT}"),
    "history": (
        "SELECT 'visit', v.id, v.center_id, v.created_at, v.status FROM hq_citizens c "
        "JOIN hq_visits v ON v.citizen_id = c.id WHERE c.cnic_index = ? "
        "UNION ALL SELECT 'application', a.id, a.center_id, a.created_at, a.status "
        "FROM hq_citizens c JOIN hq_applications a ON a.citizen_id = c.id "
        "WHERE c.cnic_index = ? ORDER BY 4, 2",
        f"WITH c AS (SELECT pk FROM {_json('citizens')} x WHERE j->>'cnic_index' = ?) "
        "SELECT 'visit', v.pk, v.center_id, v.j->>'created_at', v.j->>'status' "
        f"FROM {_json('visits')} v WHERE v.j->>'citizen_id' IN (SELECT pk FROM c) "
        "UNION ALL SELECT 'application', a.pk, a.center_id, a.j->>'created_at', "
        f"a.j->>'status' FROM {_json('applications')} a "
        "WHERE a.j->>'citizen_id' IN (SELECT pk FROM c) ORDER BY 4, 2"),
    "kpi": (
        "SELECT (SELECT count(*) FROM hq_tickets WHERE center_id = ? AND business_date = ?), "
        "(SELECT count(*) FROM hq_tickets WHERE center_id = ? AND business_date = ? "
        "AND status = 'done'), "
        "(SELECT count(*) FROM hq_tickets WHERE center_id = ? AND business_date = ? "
        "AND status = 'no_show'), "
        "(SELECT count(*) FROM hq_applications WHERE center_id = ? AND created_at >= ? "
        "AND created_at < ?), "
        "(SELECT count(*) FROM hq_feedback WHERE center_id = ? AND created_at >= ? "
        "AND created_at < ?), "
        "(SELECT round(avg(rating), 3) FROM hq_feedback WHERE center_id = ? "
        "AND created_at >= ? AND created_at < ?)",
        f"WITH t AS (SELECT j->>'status' AS status FROM {_json('tickets')} x "
        "WHERE center_id = ? AND j->>'business_date' = ?), "
        f"f AS (SELECT (j->>'rating')::bigint AS rating FROM {_json('feedback')} x "
        "WHERE center_id = ? AND j->>'created_at' >= ? AND j->>'created_at' < ?) "
        "SELECT (SELECT count(*) FROM t), (SELECT count(*) FROM t WHERE status = 'done'), "
        "(SELECT count(*) FROM t WHERE status = 'no_show'), "
        f"(SELECT count(*) FROM {_json('applications')} x WHERE center_id = ? "
        "AND j->>'created_at' >= ? AND j->>'created_at' < ?), "
        "(SELECT count(*) FROM f), (SELECT round(avg(rating), 3) FROM f)"),
}


def parameters(name: str, rng: random.Random, args: argparse.Namespace,
               persons: list[str]) -> tuple[list[Any], list[Any]]:
    """(typed params, JSON params) of one repeat of a query: same question both ways."""
    if name == "inbox":
        agency = rng.choice(AGENCIES)
        return [agency], [agency]
    if name == "history":
        index = rng.choice(persons)
        return [index, index], [index]
    center = f"C{rng.randrange(1, args.centers + 1):03d}"
    day = FIRST_DAY + timedelta(days=rng.randrange(DAYS))
    d0, d1 = day.isoformat(), (day + timedelta(days=1)).isoformat()
    typed = [center, d0, center, d0, center, d0, center, d0, d1, center, d0, d1, center, d0, d1]
    return typed, [center, d0, center, d0, d1, center, d0, d1]


def timed(db: HQDatabase, sql: str, params: list[Any]) -> tuple[float, list[Row]]:
    """Milliseconds to fetch every row, and the rows."""
    start = time.perf_counter()
    rows = db.execute(sql, params).fetchall()
    return (time.perf_counter() - start) * 1000, [tuple(r) for r in rows]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def measure(db: HQDatabase, args: argparse.Namespace) -> dict[str, Any]:
    """Every query typed and JSON, interleaved, `args.repeats` times after one warm-up."""
    rng = random.Random(args.seed)
    persons = [r[0] for r in db.execute("SELECT cnic_index FROM hq_citizens c WHERE EXISTS "
                                       "(SELECT 1 FROM hq_applications a WHERE a.citizen_id "
                                       "= c.id) ORDER BY id LIMIT 500").fetchall()]
    out: dict[str, Any] = {}
    for name, (typed_sql, json_sql) in QUERIES.items():
        times: dict[str, list[float]] = {"typed": [], "json": []}
        rows_seen = []
        for repeat in range(args.repeats + 1):
            typed_params, json_params = parameters(name, rng, args, persons)
            typed_ms, typed_rows = timed(db, typed_sql, typed_params)
            json_ms, json_rows = timed(db, json_sql, json_params)
            if typed_rows != json_rows:
                raise SystemExit(f"{name}: typed and JSON answers differ for {typed_params}")
            if repeat:  # the first is the warm-up
                times["typed"].append(typed_ms)
                times["json"].append(json_ms)
                rows_seen.append(len(typed_rows) if name != "kpi" else typed_rows[0][0])
        out[name] = {side: summary(values) for side, values in times.items()}
        out[name]["ratio_p95"] = round(out[name]["json"]["p95_ms"] /
                                       max(out[name]["typed"]["p95_ms"], 1e-6), 1)
        out[name]["rows_median"] = statistics.median(rows_seen)
    return out


def summary(values: list[float]) -> dict[str, float]:
    """Spread of the repeats."""
    return {"min_ms": round(min(values), 2), "median_ms": round(statistics.median(values), 2),
            "p95_ms": round(percentile(values, 0.95), 2), "max_ms": round(max(values), 2)}


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "commit": commit}


def report(results: dict[str, Any]) -> None:
    """The table: p95 typed vs JSON, ratio, spread, against the aims."""
    print(f"{'query':8} {'typed p95':>10} {'JSON p95':>10} {'ratio':>7}  "
          f"{'typed min/med/max':<24} {'JSON min/med/max':<26} {'rows':>5}  aim")
    for name, r in results.items():
        t, j = r["typed"], r["json"]
        met = t["p95_ms"] <= AIM_P95_MS and r["ratio_p95"] >= AIM_RATIO
        spread_t = f"{t['min_ms']:.1f}/{t['median_ms']:.1f}/{t['max_ms']:.1f} ms"
        spread_j = f"{j['min_ms']:.1f}/{j['median_ms']:.1f}/{j['max_ms']:.1f} ms"
        print(f"{name:8} {t['p95_ms']:>8.1f}ms {j['p95_ms']:>8.1f}ms {r['ratio_p95']:>6.1f}x  "
              f"{spread_t:<24} {spread_j:<26} {r['rows_median']:>5}  "
              f"{'met' if met else 'MISSED'}")


def main(argv: list[str] | None = None) -> None:
    """Load, check, measure, print (and keep a full run's figures)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=FULL_RECORDS)
    parser.add_argument("--centers", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--sample", type=int, default=2000,
                        help="records also applied through ingest and compared")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", type=Path, default=None,
                        help=f"JSON results (default for a full run: {RESULTS})")
    args = parser.parse_args(argv)
    if args.records < args.centers or args.repeats < 1:
        parser.error("--records must be at least --centers, --repeats at least 1")

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    load_before = os.getloadavg()
    with schema(f"bench_hq_{uuid.uuid4().hex[:8]}") as url:
        db = HQDatabase(url)
        try:
            load(db, args, say)
            checked = check_sample(db, min(args.sample, args.records // args.centers), args)
            say(f"{checked} records applied through ingest match the bulk load")
            results = measure(db, args)
        finally:
            db.close()
    load_after = os.getloadavg()
    print(f"{args.records:,} records, {args.centers} centers, {args.repeats} repeats; "
          f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    report(results)
    output = args.output or (RESULTS if args.records >= FULL_RECORDS else None)
    if output:
        output.write_text(json.dumps({
            "records": args.records, "centers": args.centers, "repeats": args.repeats,
            "sample_checked": checked, "load_average": [load_before[0], load_after[0]],
            "machine": machine(), "aims": {"p95_ms": AIM_P95_MS, "ratio": AIM_RATIO},
            "queries": results}, indent=2) + "\n")
        print(f"wrote {output}")


if __name__ == "__main__":
    main()
