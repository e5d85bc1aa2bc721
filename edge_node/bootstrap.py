"""`edge-node init`: data directory, key file, database, seed catalog, demo data."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from edge_node.config import Settings
from edge_node.domain import counters, staff
from edge_node.domain.catalog import apply_catalog, load_seed
from edge_node.errors import ValidationError
from edge_node.ids import iso, new_node_id, utcnow
from edge_node.node import Node, secure_data_dir
from edge_node.paths import db_path, key_path
from edge_node.store import meta
from edge_node.store.db import open_database
from edge_node.store.keyfile import create_key_file, load_key_file
from edge_node.store.migrations import migrate
from sync.changes import register_clock
from sync.hlc import Clock

CENTER_ID = re.compile(r"[A-Z0-9][A-Z0-9-]{1,15}")
# Demo data is for training and development nodes only; init prints these passwords.
DEMO_PASSWORD_SUFFIX = "-demo-pass"  # noqa: S105
DEMO_STAFF = (
    ("manager", "Center Manager", "manager"),
    ("reception", "Reception Desk", "receptionist"),
    ("operator", "Counter Operator", "operator"),
    ("supervisor", "Floor Supervisor", "supervisor"),
    ("volunteer", "Volunteer Guide", "volunteer"),
    ("technician", "Field Technician", "technician"),
    ("auditor", "Auditor", "auditor"),
    ("kiosk", "Feedback Kiosk", "kiosk"),
    ("display", "Display Board", "display"),
)


class InitError(RuntimeError):
    """The node cannot be initialised as asked."""


def init_node(settings: Settings, center_id: str) -> dict[str, Any]:
    """Create everything a node needs; refuse to touch an existing node."""
    if not CENTER_ID.fullmatch(center_id):
        raise ValidationError("center id: 2-16 capital letters, digits or '-', e.g. ISB-01")
    data_dir, path = Path(settings["data_dir"]), db_path(settings)
    if path.exists():
        raise InitError(f"{path}: a node database exists already; nothing changed")
    secure_data_dir(data_dir)
    kpath = key_path(settings)
    keys = load_key_file(kpath) if kpath.exists() else create_key_file(kpath)
    db = open_database(path, keys if settings["encrypt_db"] else None)
    try:
        node_id = _create_schema(db, center_id)
    finally:
        db.close()
    path.chmod(0o600)
    return {"node_id": node_id, "center_id": center_id, "database": str(path),
            "key_file": str(kpath), "encrypted": settings["encrypt_db"]}


def _create_schema(db: Database, center_id: str) -> str:
    """Migrate, then record the node's identity and load the seed catalog."""
    node_id = new_node_id()
    register_clock(db.conn, Clock(node_id))
    migrate(db)
    with db.atomic():
        meta.put_all(db, {meta.NODE_ID_KEY: node_id, meta.CENTER_ID_KEY: center_id,
                          meta.CREATED_AT_KEY: iso(utcnow())})
        apply_catalog(db, load_seed())
    return node_id


def load_demo(node: Node) -> list[tuple[str, str]]:
    """Demo staff (username, password) and one counter per agency."""
    now = node.timestamp()
    accounts = [(user, user + DEMO_PASSWORD_SUFFIX) for user, _, _ in DEMO_STAFF]

    def run(db: Database) -> None:
        for (user, name, role), (_, password) in zip(DEMO_STAFF, accounts, strict=True):
            staff.create_staff(db, user, name, role, password, now)
        agencies = list(db.query("SELECT code, name_en FROM agencies ORDER BY position"))
        for i, agency in enumerate(agencies, start=1):
            codes = [r["code"] for r in db.query(
                "SELECT code FROM services WHERE agency_code = ?", [agency["code"]])]
            counters.create_counter(db, f"Counter {i}", codes, now)

    node.write(run)
    return accounts
