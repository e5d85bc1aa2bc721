"""Citizens: identifier and phone validation, and profiles with field-encrypted PII.

The CNIC, name and phone are stored only encrypted (see `pii`); a CNIC is
found again through its blind index. Province and gender are read from the
CNIC when shown, never stored apart. Error messages and audit entries carry
ids and field names only, never the values.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlite_utils import Database

from edge_node.domain import audit, pii
from edge_node.errors import ConflictError, NotFoundError, ValidationError
from edge_node.ids import new_id
from edge_node.store.keyfile import NodeKeys

T = TypeVar("T")
TABLE = "citizens"
CLOCKED_FIELDS = ("cnic_index", "cnic_enc", "name_enc", "phone_enc", "id_kind")
ID_KINDS = ("cnic", "crc", "nicop")
NAME_MAX_CHARS = 100
PROVINCES = {
    "1": "Khyber Pakhtunkhwa", "2": "FATA", "3": "Punjab", "4": "Sindh",
    "5": "Balochistan", "6": "Islamabad", "7": "Gilgit-Baltistan",
}
# Urdu keyboards type Extended Arabic-Indic digits (۰–۹); some type Arabic-Indic (٠–٩).
_WESTERN_SOURCE = "۰۱۲۳۴۵۶۷۸۹٠١٢٣٤٥٦٧٨٩"
_WESTERN = str.maketrans(_WESTERN_SOURCE, "01234567890123456789")
_CNIC = re.compile(r"[0-9]{5}-[0-9]{7}-[0-9]|[0-9]{13}")
_MOBILE = re.compile(r"(?:\+92|0092|0)(3[0-9]{9})")


def _char(ch: str) -> str:
    """One character for a regex class: ASCII letters and digits as they are, the rest as a
    `\\uXXXX` escape, which Python `re` and ECMA-262 (JSON Schema) read alike."""
    return ch if ch.isascii() and ch.isalnum() else f"\\u{ord(ch):04x}"


def char_class(chars: str, negate: bool = False) -> str:
    """A regex class of `chars` (or of all but them), runs written as ranges."""
    points, runs = sorted({ord(ch) for ch in chars}), list[list[int]]()
    for point in points:
        if runs and point == runs[-1][1] + 1:
            runs[-1][1] = point
        else:
            runs.append([point, point])
    body = "".join(_char(chr(a)) + (f"-{_char(chr(b))}" if b > a else "") for a, b in runs)
    return f"[{'^' if negate else ''}{body}]"


def digit_class(western: str = "0123456789") -> str:
    """A regex class of these digits and the Urdu/Arabic digits `western_digits` maps to them."""
    return char_class(western + "".join(
        ch for ch in _WESTERN_SOURCE if ch.translate(_WESTERN) in western))


# The exact inputs the parsers below accept, as regexes the OpenAPI document declares (one
# definition: built from the same tables; tests/test_input_patterns.py checks they agree).
_SPACES = "".join(chr(c) for c in range(0x10000) if chr(c).isspace())  # strip, split and \s
_NAME_FORBIDDEN = "".join(chr(c) for c in range(0xA0) if unicodedata.category(chr(c)) == "Cc"
                          and not chr(c).isspace())
_D, _S = digit_class(), char_class(_SPACES) + "*"
_SEP = char_class(_SPACES + "()-") + "*"
CNIC_PATTERN = (f"{_S}{digit_class(''.join(PROVINCES))}{_D}{{4}}"
                f"(?:-{_D}{{7}}-|{_D}{{7}}){digit_class('123456789')}{_S}")
PHONE_PATTERN = (_SEP + "(?:\\+" + _SEP + digit_class("9") + _SEP + digit_class("2") + "|"
                 + _SEP.join(digit_class(d) for d in "0092") + "|" + digit_class("0") + ")"
                 + _SEP + digit_class("3") + (_SEP + _D) * 9 + _SEP)
_NAME_CHAR = char_class(_NAME_FORBIDDEN, negate=True)
NAME_PATTERN = f"{_NAME_CHAR}*{char_class(_NAME_FORBIDDEN + _SPACES, negate=True)}{_NAME_CHAR}*"

CNIC_FORMAT = "cnic: must be 13 digits, written XXXXX-XXXXXXX-X or without dashes"
CNIC_PROVINCE = "cnic: first digit must be a province code 1-7"
CNIC_LAST_ZERO = "cnic: last digit 0 is not used in CNIC, B-form or NICOP numbers"
PHONE_FORMAT = "phone: must be a Pakistani mobile number, 03XX-XXXXXXX or +923XXXXXXXXX"


@dataclass(frozen=True)
class Identity:
    """A valid CNIC / B-form / NICOP number and what it encodes."""

    text: str
    province: str
    gender: str


def western_digits(text: str) -> str:
    """Urdu/Arabic digits replaced by 0-9."""
    return text.translate(_WESTERN)


def parse_cnic(raw: str) -> Identity:
    """Validate and normalise to `XXXXX-XXXXXXX-X`; the message never repeats the input."""
    value = western_digits(raw.strip())
    if not _CNIC.fullmatch(value):
        raise ValidationError(CNIC_FORMAT)
    digits = value.replace("-", "")
    if digits[0] not in PROVINCES:
        raise ValidationError(CNIC_PROVINCE)
    if digits[-1] == "0":
        raise ValidationError(CNIC_LAST_ZERO)
    gender = "male" if int(digits[-1]) % 2 else "female"
    return Identity(f"{digits[:5]}-{digits[5:12]}-{digits[12]}", PROVINCES[digits[0]], gender)


def normalise_phone(raw: str, field: str = "phone") -> str:
    """A Pakistani mobile number as `+923XXXXXXXXX`."""
    compact = re.sub(r"[\s()-]", "", western_digits(raw))
    match = _MOBILE.fullmatch(compact)
    if not match:
        raise ValidationError(PHONE_FORMAT.replace("phone:", f"{field}:", 1))
    return "+92" + match.group(1)


def check_name(raw: str, field: str = "name") -> str:
    """A person's name: whitespace collapsed, 1-100 characters, no control characters."""
    name = " ".join(raw.split())
    if not 1 <= len(name) <= NAME_MAX_CHARS:
        raise ValidationError(f"{field}: must be 1-{NAME_MAX_CHARS} characters")
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        raise ValidationError(f"{field}: must not contain control characters")
    return name


def _attempt(check: Callable[[], T], errors: list[str]) -> T | None:
    """Run one check, collecting its message instead of stopping at the first."""
    try:
        return check()
    except ValidationError as exc:
        errors.append(exc.message)
        return None


def _raise_collected(errors: list[str]) -> None:
    """One ValidationError naming every problem found."""
    if errors:
        raise ValidationError("invalid citizen: " + "; ".join(errors), errors)


def reveal(keys: NodeKeys, row: dict[str, Any]) -> dict[str, Any]:
    """A stored citizen row as shown to staff: decrypted fields, province and gender."""
    cnic = pii.decrypt(keys, TABLE, "cnic_enc", row["cnic_enc"])
    identity = parse_cnic(cnic)
    return {
        "id": row["id"], "id_kind": row["id_kind"], "cnic": identity.text,
        "name": pii.decrypt(keys, TABLE, "name_enc", row["name_enc"]),
        "phone": pii.decrypt_optional(keys, TABLE, "phone_enc", row["phone_enc"]),
        "province": identity.province, "gender": identity.gender,
        "created_at": row["created_at"], "updated_at": row["updated_at"],
    }


def stamp_fields(db: Database, clocks_json: str, fields: list[str]) -> str:
    """`field_hlc` with `fields` set to a fresh HLC, each remembering the clock it replaced."""
    clocks: dict[str, Any] = json.loads(clocks_json or "{}")
    hlc = str(db.execute("SELECT sync_hlc()").fetchone()[0])
    for name in fields:
        clocks[name] = {"hlc": hlc, "base": clocks.get(name, {}).get("hlc")}
    return json.dumps(clocks, sort_keys=True)


def _row(db: Database, citizen_id: str) -> dict[str, Any]:
    """The stored row of a citizen, or NotFoundError."""
    rows = list(db.query("SELECT * FROM citizens WHERE id = ?", [citizen_id]))
    if not rows:
        raise NotFoundError(f"unknown citizen: {citizen_id}")
    return rows[0]


def register(db: Database, keys: NodeKeys, *, cnic: str, name: str, phone: str | None,
             id_kind: str, actor: dict[str, Any], now: str) -> dict[str, Any]:
    """Create a citizen profile (writer); a CNIC already registered is a conflict."""
    errors: list[str] = []
    identity = _attempt(lambda: parse_cnic(cnic), errors)
    clean_name = _attempt(lambda: check_name(name), errors)
    clean_phone = _attempt(lambda: normalise_phone(phone), errors) if phone is not None else None
    if id_kind not in ID_KINDS:
        errors.append(f"id_kind: must be one of {', '.join(ID_KINDS)}")
    _raise_collected(errors)
    assert identity is not None and clean_name is not None
    index = pii.cnic_index(keys, identity.text)
    existing = _by_index(db, pii.cnic_index_candidates(keys, identity.text))
    if existing:
        raise ConflictError(f"a citizen with this CNIC is registered already: {existing['id']}")
    row = {
        "id": new_id(), "cnic_index": index,
        "cnic_enc": pii.encrypt(keys, TABLE, "cnic_enc", identity.text),
        "name_enc": pii.encrypt(keys, TABLE, "name_enc", clean_name),
        "phone_enc": pii.encrypt_optional(keys, TABLE, "phone_enc", clean_phone),
        "id_kind": id_kind, "created_at": now, "updated_at": now,
        "field_hlc": stamp_fields(db, "{}", list(CLOCKED_FIELDS)),
    }
    db.table(TABLE).insert(row)
    audit.append(db, actor, "citizen.register", "citizen", row["id"], now, {"id_kind": id_kind})
    return reveal(keys, row)


def get_citizen(db: Database, keys: NodeKeys, citizen_id: str) -> dict[str, Any]:
    """One citizen, decrypted, or NotFoundError."""
    return reveal(keys, _row(db, citizen_id))


def lookup(db: Database, keys: NodeKeys, cnic: str) -> dict[str, Any]:
    """Find a citizen by CNIC through the blind index only."""
    found = _by_index(db, pii.cnic_index_candidates(keys, parse_cnic(cnic).text))
    if found is None:
        raise NotFoundError("no citizen is registered with this CNIC")
    return reveal(keys, found)


def _by_index(db: Database, indexes: list[str]) -> dict[str, Any] | None:
    """The citizen stored under any of `indexes` (the first key that finds one), or None."""
    for index in indexes:
        rows = list(db.query("SELECT * FROM citizens WHERE cnic_index = ?", [index]))
        if rows:
            return rows[0]
    return None


def reindex(db: Database, keys: NodeKeys, now: str) -> int:
    """Store every citizen's CNIC index under the newest key (writer); returns how many moved.

    Each changed row is captured like any edit (the `cnic_index` field clock
    moves), so HQ receives the re-indexed rows. One audit entry with the count.
    """
    moved = 0
    for row in list(db.query("SELECT id, cnic_enc, cnic_index, field_hlc FROM citizens")):
        index = pii.cnic_index(keys, pii.decrypt(keys, TABLE, "cnic_enc", row["cnic_enc"]))
        if index == row["cnic_index"]:
            continue
        clocks = stamp_fields(db, row["field_hlc"], ["cnic_index"])
        db.table(TABLE).update(row["id"], {"cnic_index": index, "field_hlc": clocks})
        moved += 1
    if moved:
        current = keys.fleet_current
        audit.append(db, None, "citizen.reindex", "citizen", "*", now,
                     {"count": moved, "fleet_version": current[0] if current else None})
    return moved


def update(db: Database, keys: NodeKeys, citizen_id: str, *, name: str | None,
           phone: str | None, actor: dict[str, Any], now: str) -> dict[str, Any]:
    """Change a citizen's name and/or phone (writer); unchanged values are not rewritten."""
    if name is None and phone is None:
        raise ValidationError("nothing to change: send name, phone or both")
    errors: list[str] = []
    clean_name = _attempt(lambda: check_name(name), errors) if name is not None else None
    clean_phone = _attempt(lambda: normalise_phone(phone), errors) if phone is not None else None
    _raise_collected(errors)
    row = _row(db, citizen_id)
    current = reveal(keys, row)
    changes: dict[str, Any] = {}
    if clean_name is not None and clean_name != current["name"]:
        changes["name_enc"] = pii.encrypt(keys, TABLE, "name_enc", clean_name)
    if clean_phone is not None and clean_phone != current["phone"]:
        changes["phone_enc"] = pii.encrypt(keys, TABLE, "phone_enc", clean_phone)
    if not changes:
        return current
    clocks = stamp_fields(db, row["field_hlc"], sorted(changes))
    db.table(TABLE).update(citizen_id, {**changes, "field_hlc": clocks, "updated_at": now})
    fields = sorted(column.removesuffix("_enc") for column in changes)
    audit.append(db, actor, "citizen.update", "citizen", citizen_id, now, {"fields": fields})
    return get_citizen(db, keys, citizen_id)


def _clock_entry(entry: Any) -> dict[str, str | None] | None:
    """A field clock as HQ sent it (`{"hlc", "base"}`), or None when malformed."""
    if not isinstance(entry, dict) or not isinstance(entry.get("hlc"), str):
        return None
    base = entry.get("base")
    return {"hlc": entry["hlc"], "base": base if isinstance(base, str) else None}


def receive(db: Database, keys: NodeKeys, data: dict[str, Any], now: str) -> str:
    """A citizen HQ sent in answer to a lookup, filled in here (writer); returns the id held.

    Kept under HQ's id with HQ's field clocks, so the row this node captures
    merges at HQ as the write it already holds and later edits here merge into
    the same record. A row of that id takes each field whose clock HQ has newer;
    a citizen of the same CNIC registered here meanwhile stays (HQ links the two).
    """
    errors: list[str] = []
    identity = _attempt(lambda: parse_cnic(str(data["cnic"])), errors)
    clean_name = _attempt(lambda: check_name(str(data["name"])), errors)
    phone = data.get("phone")
    clean_phone = _attempt(lambda: normalise_phone(str(phone)), errors) \
        if phone is not None else None
    citizen_id, id_kind = data["id"], data.get("id_kind")
    if id_kind not in ID_KINDS:
        errors.append(f"id_kind: must be one of {', '.join(ID_KINDS)}")
    if not isinstance(citizen_id, str) or not 0 < len(citizen_id) <= 128:
        errors.append("id: must be text of 1-128 characters")
    _raise_collected(errors)
    citizen_id = str(citizen_id)
    assert identity is not None and clean_name is not None
    raw = data.get("clocks")
    given: dict[str, Any] = raw if isinstance(raw, dict) else {}
    clocks = {name: entry for name in CLOCKED_FIELDS
              if (entry := _clock_entry(given.get(name))) is not None}
    values = {"cnic_index": pii.cnic_index(keys, identity.text),
              "cnic_enc": pii.encrypt(keys, TABLE, "cnic_enc", identity.text),
              "name_enc": pii.encrypt(keys, TABLE, "name_enc", clean_name),
              "phone_enc": pii.encrypt_optional(keys, TABLE, "phone_enc", clean_phone),
              "id_kind": id_kind}
    same = _by_index(db, pii.cnic_index_candidates(keys, identity.text))
    if same is not None and same["id"] != citizen_id:
        return str(same["id"])
    if same is None:
        fresh = json.loads(stamp_fields(db, "{}", list(CLOCKED_FIELDS)))
        db.table(TABLE).insert({
            "id": citizen_id, **values, "created_at": data.get("created_at") or now,
            "updated_at": data.get("updated_at") or now,
            "field_hlc": json.dumps({**fresh, **clocks}, sort_keys=True)})
        audit.append(db, None, "citizen.received", "citizen", citizen_id, now)
        return citizen_id
    held = json.loads(same["field_hlc"] or "{}")
    newer = [name for name in ("name_enc", "phone_enc", "id_kind") if name in clocks
             and str(clocks[name]["hlc"]) > held.get(name, {}).get("hlc", "")]
    if newer:
        db.table(TABLE).update(citizen_id, {
            **{name: values[name] for name in newer}, "updated_at": now,
            "field_hlc": json.dumps({**held, **{n: clocks[n] for n in newer}},
                                    sort_keys=True)})
        audit.append(db, None, "citizen.received", "citizen", citizen_id, now,
                     {"fields": sorted(n.removesuffix("_enc") for n in newer)})
    return citizen_id
