"""The offline backlog of the sync benchmark: tickets as reception issues them.

Each ticket is five rows — visit, ticket, ticket service, "issued" event and a
hash-chained audit entry — shaped like those `create_visit` writes, inserted
ticket by ticket in the node's writer so the capture triggers queue five
outbox records per ticket in the order a real day produces them. This is
~50x faster than going through HTTP and gives the same outbox.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from edge_node.ids import iso, new_id
from edge_node.node import Node
from sync.chain import GENESIS_HASH, entry_hash

RECORDS_PER_TICKET = 5
TICKETS_PER_WRITE = 2_000  # one transaction each
TICKETS_PER_DAY = 2_000
SECONDS_BETWEEN_TICKETS = 14  # 2,000 tickets from 09:00 to ~16:45
DAY_ONE = datetime(2025, 3, 3, 4, 0, tzinfo=UTC)  # 09:00 in Islamabad
STAFF = {"id": "0190a1b2-0000-7000-8000-00000000beef", "role": "receptionist"}
AUDIT_COLUMNS = ("id", "seq", "at", "actor_id", "actor_role", "action", "entity", "entity_id",
                 "detail", "prev_hash", "hash")
INSERTS = {
    "visits": "INSERT INTO visits (id, business_date, priority, status, services, "
              "missing_documents, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    "tickets": "INSERT INTO tickets (id, visit_id, number, queue_prefix, daily_number, "
               "business_date, priority, priority_weight, status, queue_code, service_code, "
               "enqueued_at, order_key, issued_at, updated_at) "
               "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "ticket_services": "INSERT INTO ticket_services (id, ticket_id, position, service_code, "
                       "queue_code, status, enqueued_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
    "ticket_events": "INSERT INTO ticket_events (id, ticket_id, event, service_code, "
                     "queue_code, staff_id, at, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    "audit_log": f"INSERT INTO audit_log ({', '.join(AUDIT_COLUMNS)}) "
                 f"VALUES ({', '.join('?' * len(AUDIT_COLUMNS))})",
}
Row = tuple[Any, ...]


class Reception:
    """Issues tickets as rows, 2,000 a day, numbered per queue and day, audit chained."""

    def __init__(self, services: list[tuple[str, str, str]]) -> None:
        """Services as (code, agency, queue prefix), taken in turn."""
        self.services = services
        self.issued = 0
        self.numbers: dict[tuple[str, str], int] = {}
        self.audit_seq, self.audit_prev = 0, GENESIS_HASH

    def ticket(self) -> tuple[Row, ...]:
        """The next ticket's rows, in INSERTS order."""
        i = self.issued = self.issued + 1
        code, agency, prefix = self.services[i % len(self.services)]
        day, slot = divmod(i, TICKETS_PER_DAY)
        now = iso(DAY_ONE + timedelta(days=day, seconds=slot * SECONDS_BETWEEN_TICKETS,
                                      microseconds=i * 7919 % 1_000_000))
        date = now[:10]
        number = self.numbers[prefix, date] = self.numbers.get((prefix, date), 0) + 1
        visit_id, ticket_id = new_id(), new_id()
        return ((visit_id, date, "normal", "open", json.dumps([code]), "[]", STAFF["id"], now),
                (ticket_id, visit_id, f"{prefix}-{number:03d}", prefix, number, date, "normal",
                 0, "waiting", agency, code, now, i, now, now),
                (new_id(), ticket_id, 0, code, agency, "waiting", now),
                (new_id(), ticket_id, "issued", code, agency, STAFF["id"], now, "{}"),
                self._audit(now, visit_id, code))

    def _audit(self, now: str, visit_id: str, code: str) -> Row:
        """The audit entry of a visit, linked to the previous one."""
        self.audit_seq += 1
        entry = {"id": new_id(), "seq": self.audit_seq, "at": now, "actor_id": STAFF["id"],
                 "actor_role": STAFF["role"], "action": "visit.create", "entity": "visit",
                 "entity_id": visit_id, "prev_hash": self.audit_prev,
                 "detail": json.dumps({"missing_documents": 0, "priority": "normal",
                                       "services": [code]}, sort_keys=True)}
        self.audit_prev = entry["hash"] = entry_hash(entry)
        return tuple(entry[c] for c in AUDIT_COLUMNS)


def fill_outbox(node: Node, records: int) -> int:
    """Queue about `records` outbox records (a multiple of 5); returns the outbox size."""
    reception = Reception(node.reader().execute(
        "SELECT s.code, s.agency_code, a.queue_prefix FROM services s "
        "JOIN agencies a ON a.code = s.agency_code ORDER BY s.position").fetchall())
    tickets = records // RECORDS_PER_TICKET
    for first in range(0, tickets, TICKETS_PER_WRITE):
        batch = [reception.ticket() for _ in range(min(TICKETS_PER_WRITE, tickets - first))]

        def write(db: Any, batch: list[tuple[Row, ...]] = batch) -> None:
            for rows in batch:
                for sql, row in zip(INSERTS.values(), rows, strict=True):
                    db.conn.execute(sql, row)

        node.write(write)
    count: int = node.reader().execute("SELECT count(*) FROM sync_outbox").fetchone()[0]
    return count
