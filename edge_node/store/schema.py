"""DDL of the node database, one named migration at a time.

Synced tables (captured into the outbox) are listed in SYNCED_TABLES; the
catalog and staff accounts come from HQ and are not captured.
"""

from __future__ import annotations

SYNCED_TABLES: tuple[str, ...] = (
    "citizens", "visits", "tickets", "ticket_services", "ticket_events", "counters",
    "applications", "feedback", "volunteers", "volunteer_shifts", "audit_log",
    "kpi_snapshots",
)

INITIAL = """
CREATE TABLE node_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

CREATE TABLE agencies (
    code TEXT PRIMARY KEY, queue_prefix TEXT NOT NULL UNIQUE,
    name_en TEXT NOT NULL, name_ur TEXT NOT NULL, position INTEGER NOT NULL
);
CREATE TABLE documents (code TEXT PRIMARY KEY, name_en TEXT NOT NULL, name_ur TEXT NOT NULL);
CREATE TABLE services (
    code TEXT PRIMARY KEY, agency_code TEXT NOT NULL REFERENCES agencies(code),
    name_en TEXT NOT NULL, name_ur TEXT NOT NULL, standard_minutes INTEGER NOT NULL,
    turnaround_days INTEGER, fees TEXT NOT NULL DEFAULT '[]',
    documents TEXT NOT NULL DEFAULT '[]', active INTEGER NOT NULL DEFAULT 1,
    position INTEGER NOT NULL
);
CREATE TABLE priority_classes (
    code TEXT PRIMARY KEY, name_en TEXT NOT NULL, name_ur TEXT NOT NULL,
    weight INTEGER NOT NULL
);

CREATE TABLE staff (
    id TEXT PRIMARY KEY, username TEXT NOT NULL UNIQUE, full_name TEXT NOT NULL,
    role TEXT NOT NULL, password_hash TEXT NOT NULL, active INTEGER NOT NULL DEFAULT 1,
    language TEXT NOT NULL DEFAULT 'en', version INTEGER NOT NULL DEFAULT 1,
    updated_at TEXT NOT NULL
);
CREATE TABLE staff_login_state (
    staff_id TEXT PRIMARY KEY REFERENCES staff(id), failures INTEGER NOT NULL DEFAULT 0,
    locked_until TEXT
);
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY, staff_id TEXT NOT NULL REFERENCES staff(id),
    created_at TEXT NOT NULL, last_seen_at TEXT NOT NULL
);

CREATE TABLE citizens (
    id TEXT PRIMARY KEY, cnic_index TEXT NOT NULL UNIQUE, cnic_enc TEXT NOT NULL,
    name_enc TEXT NOT NULL, phone_enc TEXT, id_kind TEXT NOT NULL DEFAULT 'cnic',
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL
);

CREATE TABLE visits (
    id TEXT PRIMARY KEY, citizen_id TEXT REFERENCES citizens(id),
    business_date TEXT NOT NULL, priority TEXT NOT NULL REFERENCES priority_classes(code),
    status TEXT NOT NULL, services TEXT NOT NULL, missing_documents TEXT NOT NULL DEFAULT '[]',
    created_by TEXT, created_at TEXT NOT NULL, closed_at TEXT
);

CREATE TABLE queue_numbers (
    queue_code TEXT NOT NULL, business_date TEXT NOT NULL, last_number INTEGER NOT NULL,
    PRIMARY KEY (queue_code, business_date)
);

CREATE TABLE tickets (
    id TEXT PRIMARY KEY, visit_id TEXT NOT NULL REFERENCES visits(id),
    number TEXT NOT NULL, queue_prefix TEXT NOT NULL, daily_number INTEGER NOT NULL,
    business_date TEXT NOT NULL, priority TEXT NOT NULL, priority_weight INTEGER NOT NULL,
    status TEXT NOT NULL, queue_code TEXT NOT NULL, service_code TEXT NOT NULL,
    counter_id TEXT, staff_id TEXT, target_counter_id TEXT,
    enqueued_at TEXT NOT NULL, order_key INTEGER NOT NULL, called_at TEXT,
    recall_count INTEGER NOT NULL DEFAULT 0, rejoin_until TEXT, hold_reason TEXT,
    issued_at TEXT NOT NULL, updated_at TEXT NOT NULL, completed_at TEXT,
    UNIQUE (queue_prefix, business_date, daily_number)
);
CREATE INDEX tickets_waiting ON tickets (status, queue_code, priority_weight, order_key);

CREATE TABLE ticket_services (
    id TEXT PRIMARY KEY, ticket_id TEXT NOT NULL REFERENCES tickets(id),
    position INTEGER NOT NULL, service_code TEXT NOT NULL, queue_code TEXT NOT NULL,
    status TEXT NOT NULL, enqueued_at TEXT, called_at TEXT, completed_at TEXT,
    counter_id TEXT, staff_id TEXT, UNIQUE (ticket_id, position)
);

CREATE TABLE ticket_events (
    id TEXT PRIMARY KEY, ticket_id TEXT NOT NULL REFERENCES tickets(id),
    event TEXT NOT NULL, service_code TEXT, queue_code TEXT, counter_id TEXT,
    staff_id TEXT, at TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX ticket_events_ticket ON ticket_events (ticket_id);

CREATE TABLE counters (
    id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, services TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'closed', pause_reason TEXT, staff_id TEXT,
    priority_streak INTEGER NOT NULL DEFAULT 0, updated_at TEXT NOT NULL
);

CREATE TABLE reference_numbers (
    kind TEXT NOT NULL, business_date TEXT NOT NULL, last_number INTEGER NOT NULL,
    PRIMARY KEY (kind, business_date)
);

CREATE TABLE applications (
    id TEXT PRIMARY KEY, reference TEXT NOT NULL UNIQUE, ticket_id TEXT REFERENCES tickets(id),
    citizen_id TEXT REFERENCES citizens(id), service_code TEXT NOT NULL,
    agency_code TEXT NOT NULL, agency_reference TEXT, fee_reference TEXT,
    documents_seen TEXT NOT NULL DEFAULT '[]', status TEXT NOT NULL, status_hlc TEXT,
    created_by TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL, notes TEXT
);

CREATE TABLE feedback (
    id TEXT PRIMARY KEY, ticket_id TEXT NOT NULL UNIQUE REFERENCES tickets(id),
    rating INTEGER NOT NULL CHECK (rating BETWEEN 1 AND 5), comment TEXT,
    service_code TEXT, counter_id TEXT, staff_id TEXT, created_at TEXT NOT NULL
);

CREATE TABLE volunteers (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, phone_enc TEXT, skills TEXT NOT NULL DEFAULT '[]',
    active INTEGER NOT NULL DEFAULT 1, created_at TEXT NOT NULL, updated_at TEXT NOT NULL
);
CREATE TABLE volunteer_shifts (
    id TEXT PRIMARY KEY, volunteer_id TEXT NOT NULL REFERENCES volunteers(id),
    business_date TEXT NOT NULL, planned_start TEXT NOT NULL, planned_end TEXT NOT NULL,
    assignment TEXT, checked_in_at TEXT, checked_out_at TEXT,
    assists INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL
);

CREATE TABLE audit_log (
    id TEXT PRIMARY KEY, seq INTEGER NOT NULL UNIQUE, at TEXT NOT NULL,
    actor_id TEXT, actor_role TEXT, action TEXT NOT NULL, entity TEXT,
    entity_id TEXT, detail TEXT NOT NULL DEFAULT '{}', prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);

CREATE TABLE kpi_snapshots (
    id TEXT PRIMARY KEY, business_date TEXT NOT NULL UNIQUE, data TEXT NOT NULL,
    created_at TEXT NOT NULL
);
"""

# 0002: indexes for the application, feedback and volunteer screens.
DOMAIN_INDEXES: tuple[str, ...] = (
    "CREATE INDEX applications_status ON applications (status, created_at)",
    "CREATE INDEX applications_ticket ON applications (ticket_id, service_code)",
    "CREATE INDEX volunteer_shifts_day ON volunteer_shifts (business_date, planned_start)",
    "CREATE INDEX volunteer_shifts_volunteer ON volunteer_shifts (volunteer_id, business_date)",
)

# 0003: per-field clocks of citizen profiles, read by HQ's per-field LWW merge
# (sync.merge: `{"column": {"hlc": clock, "base": clock it replaced}}`).
CITIZEN_FIELD_CLOCKS = "ALTER TABLE citizens ADD COLUMN field_hlc TEXT NOT NULL DEFAULT '{}'"
# A back-office decision's reason and time (DESIGN.md "Decisions"), shown and printed.
APPLICATION_DECISIONS: tuple[str, ...] = (
    "ALTER TABLE applications ADD COLUMN decision_reason TEXT",
    "ALTER TABLE applications ADD COLUMN decided_at TEXT",
)
