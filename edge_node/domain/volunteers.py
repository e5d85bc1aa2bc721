"""Volunteers: the roster (phone field-encrypted) and its management by supervisors.

Shifts, check-in/out, assists and the hours report live in `volunteer_shifts`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from sqlite_utils import Database

from edge_node.domain import audit, pii
from edge_node.domain.citizens import check_name, normalise_phone
from edge_node.errors import NotFoundError, ValidationError
from edge_node.ids import new_id
from edge_node.store.keyfile import NodeKeys

TABLE = "volunteers"
MAX_SKILLS = 20
SKILL_PATTERN = r"[a-z0-9_]{1,32}"  # declared as it is in the OpenAPI document
_SKILL = re.compile(SKILL_PATTERN)


def check_skills(skills: list[str]) -> list[str]:
    """Skill codes (e.g. `urdu`, `sign_language`), deduplicated and sorted."""
    if len(skills) > MAX_SKILLS:
        raise ValidationError(f"skills: at most {MAX_SKILLS}")
    if not all(isinstance(s, str) and _SKILL.fullmatch(s) for s in skills):
        raise ValidationError("skills: each skill is a code of a-z, 0-9 and _ (1-32 characters)")
    return sorted(set(skills))


def reveal(keys: NodeKeys, row: dict[str, Any]) -> dict[str, Any]:
    """A stored volunteer as shown to supervisors (phone decrypted)."""
    return {
        "id": row["id"], "name": row["name"],
        "phone": pii.decrypt_optional(keys, TABLE, "phone_enc", row["phone_enc"]),
        "skills": json.loads(row["skills"]), "active": bool(row["active"]),
        "created_at": row["created_at"], "updated_at": row["updated_at"],
    }


def volunteer_row(db: Database, volunteer_id: str) -> dict[str, Any]:
    """The stored row of a volunteer, or NotFoundError."""
    rows = list(db.query("SELECT * FROM volunteers WHERE id = ?", [volunteer_id]))
    if not rows:
        raise NotFoundError(f"unknown volunteer: {volunteer_id}")
    return rows[0]


def get_volunteer(db: Database, keys: NodeKeys, volunteer_id: str) -> dict[str, Any]:
    """One volunteer, or NotFoundError."""
    return reveal(keys, volunteer_row(db, volunteer_id))


def list_volunteers(db: Database, keys: NodeKeys, active_only: bool) -> list[dict[str, Any]]:
    """The roster by name."""
    where = "WHERE active = 1" if active_only else ""
    return [reveal(keys, r) for r in db.query(f"SELECT * FROM volunteers {where} ORDER BY name")]


def _sealed_phone(keys: NodeKeys, phone: str | None) -> str | None:
    """Validate and encrypt a phone number (None stays None)."""
    if phone is None:
        return None
    return pii.encrypt(keys, TABLE, "phone_enc", normalise_phone(phone))


def add_volunteer(db: Database, keys: NodeKeys, *, name: str, phone: str | None,
                  skills: list[str], actor: dict[str, Any], now: str) -> dict[str, Any]:
    """Put a volunteer on the roster, active (writer)."""
    row: dict[str, Any] = {
        "id": new_id(), "name": check_name(name), "phone_enc": _sealed_phone(keys, phone),
        "skills": json.dumps(check_skills(skills)), "active": 1, "created_at": now,
        "updated_at": now}
    db.table(TABLE).insert(row)
    audit.append(db, actor, "volunteer.add", "volunteer", row["id"], now)
    return reveal(keys, row)


def update_volunteer(db: Database, keys: NodeKeys, volunteer_id: str, fields: dict[str, Any],
                     actor: dict[str, Any], now: str) -> dict[str, Any]:
    """Change name, phone, skills and/or active (None means unchanged) (writer)."""
    given = {k: v for k, v in fields.items() if v is not None}
    if not given:
        raise ValidationError("nothing to change: send name, phone, skills or active")
    volunteer_row(db, volunteer_id)
    changes: dict[str, Any] = {"updated_at": now}
    if "name" in given:
        changes["name"] = check_name(given["name"])
    if "phone" in given:
        changes["phone_enc"] = _sealed_phone(keys, given["phone"])
    if "skills" in given:
        changes["skills"] = json.dumps(check_skills(given["skills"]))
    if "active" in given:
        changes["active"] = int(given["active"])
    db.table(TABLE).update(volunteer_id, changes)
    audit.append(db, actor, "volunteer.update", "volunteer", volunteer_id, now,
                 {"fields": sorted(given)})
    return get_volunteer(db, keys, volunteer_id)
