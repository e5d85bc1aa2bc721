"""Schema-based fuzzing of the whole JSON API with schemathesis, all checks, real ids.

Every operation of /api/openapi.json is called with generated requests
(valid and invalid ones) as a manager, with path parameters set to ids that
exist, so requests get past the 404. Any server error, response that breaks
the document, schema-valid request refused or schema-invalid request accepted
fails the test. `make fuzz` runs the same with many more examples
(EDGE_FUZZ_EXAMPLES).
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.core.errors import InvalidSchema
from schemathesis.core.parameters import ParameterLocation
from schemathesis.core.result import Err, Ok
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.checks import positive_data_acceptance

from edge_node.bootstrap import DEMO_PASSWORD_SUFFIX
from edge_node.node import Node
from local_ui.app import create_app
from tests.helpers import NADRA

EXAMPLES = int(os.environ.get("EDGE_FUZZ_EXAMPLES", "25"))
pytestmark = pytest.mark.slow

Operation = APIOperation[Any, Any, Any, Any]


def log_in(app: Flask, user: str) -> dict[str, str]:
    """Bearer headers of a fresh session of a demo account."""
    resp = app.test_client().post("/api/auth/login", json={
        "username": user, "password": user + DEMO_PASSWORD_SUFFIX})
    assert resp.status_code == 200, resp.get_json()
    return {"Authorization": f"Bearer {resp.get_json()['token']}"}


def seed_ids(app: Flask, headers: dict[str, str]) -> dict[str, str]:
    """Create one of each record through the API; their ids fill the path parameters."""
    client = app.test_client()

    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        resp = client.post(path, json=body, headers=headers)
        assert resp.status_code in (200, 201), (path, resp.get_json())
        return dict(resp.get_json())

    citizen = post("/api/citizens", {"cnic": "35202-1234567-1", "name": "Ali Raza"})
    ticket = post("/api/visits", {"services": [NADRA], "citizen_id": citizen["id"]})["ticket"]
    counters = client.get("/api/counters", headers=headers).get_json()
    application = post("/api/applications", {"service_code": NADRA, "ticket_id": ticket["id"],
                                              "citizen_id": citizen["id"],
                                              "agency_reference": "TRK-1"})
    volunteer = post("/api/volunteers", {"name": "Sana"})
    shift = post(f"/api/volunteers/{volunteer['id']}/shifts", {
        "business_date": "2026-03-02", "planned_start": "09:00", "planned_end": "13:00"})
    return {"citizen_id": citizen["id"], "ticket_id": ticket["id"],
            "counter_id": counters[0]["id"] if isinstance(counters, list)
            else counters["counters"][0]["id"],
            "application_id": application["id"], "reference": "TRK-1",
            "volunteer_id": volunteer["id"], "shift_id": shift["id"]}


MODES = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)


def fuzz_operation(app: Flask, operation: Any, mode: Any, headers: dict[str, str],
                   ids: dict[str, str]) -> str | None:
    """Run one operation's generated cases; the first failure as text, or None."""
    names = [p.name for p in operation.path_parameters]
    fixed = {name: ids[name] for name in names if name in ids}

    @given(case=operation.as_strategy(mode, path_parameters=fixed or None))
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        sent = log_in(app, "manager") if operation.path == "/api/auth/logout" else headers
        if case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER):
            sent = {}  # the case breaks the Authorization header on purpose: keep it broken
        response = case.call(headers=sent)
        case.validate_response(response, headers=sent, excluded_checks=(
            [positive_data_acceptance] if declared_refusal(operation, response) else []))

    try:
        run()
    except Unsatisfiable:
        if mode is not schemathesis.GenerationMode.NEGATIVE:
            raise
        return None  # no input of this operation can break the schema (no body, no query)
    except (Exception, BaseExceptionGroup) as exc:  # schemathesis failure group
        return f"{operation.method.upper()} {operation.path} [{mode}]: {exc}"
    return None


def valid(result: Ok[Operation] | Err[InvalidSchema]) -> Operation:
    """The operation of the document, or a failure naming why the document is invalid."""
    if isinstance(result, Err):
        raise AssertionError(f"invalid API document: {result.err()}")
    return result.ok()


def declared_refusal(operation: Any, response: Any) -> bool:
    """A 400 whose every message is a rule the operation declares in `x-cross-field-rules`.

    Those are the rules JSON Schema cannot state (an end before its start): the document
    names them, so a client knows them, and no other 400 may answer a schema-valid request.
    """
    rules = set(operation.definition.raw.get("x-cross-field-rules", []))
    if response.status_code != 400 or not rules:
        return False
    errors = response.json().get("errors", [])
    return bool(errors) and set(errors) <= rules


def test_api_fuzz(node: Node) -> None:
    """0 server errors, 0 responses outside the document, valid accepted, invalid refused."""
    app = create_app(node, {"TESTING": False})
    headers = log_in(app, "manager")
    ids = seed_ids(app, headers)
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    failures = [failure for result in schema.get_all_operations() for mode in MODES
                if (failure := fuzz_operation(app, valid(result), mode, headers, ids))]
    assert not failures, f"{len(failures)} failing operations:\n" + "\n\n".join(failures)
