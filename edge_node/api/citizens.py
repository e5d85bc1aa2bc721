"""Citizen routes: register, look up by CNIC (blind index), read and edit a profile."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g

from edge_node import lifecycle
from edge_node.api.routing import api_route, node
from edge_node.api.schema import Field, at_least_one
from edge_node.api.shapes import STR, nullable, obj
from edge_node.domain import citizens
from edge_node.domain.roles import OPERATORS, RECEPTION
from edge_node.errors import NotFoundError
from edge_node.replication import lookup as hq_lookup

bp = Blueprint("citizens", __name__, url_prefix="/api")

ROLES = RECEPTION | OPERATORS
CITIZEN = obj(
    id=STR, id_kind=STR, cnic=STR, name=STR, phone=nullable(STR), province=STR, gender=STR,
    created_at=STR, updated_at=STR,
)
CNIC_FIELD = Field("cnic", "string", min=1, max=32, pattern=citizens.CNIC_PATTERN,
                   domain_checked=True,
                   description="CNIC, B-form (CRC) or NICOP number: XXXXX-XXXXXXX-X or 13 digits "
                               "(Urdu digits and surrounding spaces accepted)")
NAME_FIELD = Field("name", "string", min=1, max=citizens.NAME_MAX_CHARS,
                   pattern=citizens.NAME_PATTERN, domain_checked=True,
                   description="Not blank, no control characters; spaces are collapsed")
PHONE_FIELD = Field("phone", "string", required=False, min=1, max=20,
                    pattern=citizens.PHONE_PATTERN, domain_checked=True,
                    description="Pakistani mobile: 03XX-XXXXXXX or +923XXXXXXXXX (Urdu digits, "
                                "spaces, dashes and brackets accepted)")
PATCH_FIELDS = [Field("name", "string", required=False, min=1, max=citizens.NAME_MAX_CHARS,
                      pattern=citizens.NAME_PATTERN, domain_checked=True), PHONE_FIELD]


@api_route(bp, "/citizens", "POST", summary="Register a citizen (a known CNIC is a 409)",
           roles=ROLES, status=201, response=CITIZEN,
           body=[CNIC_FIELD, NAME_FIELD, PHONE_FIELD,
                 Field("id_kind", "string", required=False, enum=citizens.ID_KINDS,
                       description="Kind of identity document (default: cnic)")])
def register(body: dict[str, Any]) -> dict[str, Any]:
    """PII is encrypted before it reaches the database."""
    n, actor = node(), dict(g.staff)
    now, keys = n.timestamp(), n.keys
    return n.write(lambda db: citizens.register(
        db, keys, cnic=body["cnic"], name=body["name"], phone=body["phone"],
        id_kind=body["id_kind"] or "cnic", actor=actor, now=now))


NOT_HERE = {"not_found": "no citizen is registered with this CNIC, here or at HQ",
            "unavailable": "no citizen is registered with this CNIC here, and HQ could not be "
                           "asked (offline or no answer): register the citizen; HQ links the "
                           "records later"}


@api_route(bp, "/citizens/lookup", "GET", summary="Find a citizen by CNIC (here, else at HQ "
           "when online: filled in here)", roles=ROLES, response=CITIZEN, query=[CNIC_FIELD],
           errors=(404,))
def lookup(query: dict[str, Any]) -> dict[str, Any]:
    """Through the blind index: the CNIC is never compared in clear. Not here and online:
    HQ is asked by fleet index, waiting at most 3 s (edge_node/replication/lookup.py)."""
    n = node()
    try:
        return citizens.lookup(n.reader(), n.keys, query["cnic"])
    except NotFoundError:
        outcome, found = hq_lookup.ask_hq(n, lifecycle.current_agent(),
                                          citizens.parse_cnic(query["cnic"]).text,
                                          str(g.staff["id"]))
    if found is None:
        raise NotFoundError(NOT_HERE[outcome])
    return found


@api_route(bp, "/citizens/<citizen_id>", "GET", summary="One citizen", roles=ROLES,
           response=CITIZEN)
def get_citizen(citizen_id: str) -> dict[str, Any]:
    """Decrypted for the staff member asking."""
    n = node()
    return citizens.get_citizen(n.reader(), n.keys, citizen_id)


@api_route(bp, "/citizens/<citizen_id>", "PATCH", summary="Change a citizen's name or phone",
           roles=ROLES, response=CITIZEN, body=PATCH_FIELDS, rules=[at_least_one(PATCH_FIELDS)])
def update_citizen(citizen_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """The CNIC itself is an identity and is not editable."""
    n, actor = node(), dict(g.staff)
    now, keys = n.timestamp(), n.keys
    return n.write(lambda db: citizens.update(
        db, keys, citizen_id, name=body["name"], phone=body["phone"], actor=actor, now=now))
