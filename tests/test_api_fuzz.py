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
from schemathesis.core.errors import InvalidSchema
from schemathesis.core.result import Err, Ok
from schemathesis.schemas import APIOperation

from edge_node.bootstrap import DEMO_PASSWORD_SUFFIX
from edge_node.node import Node
from local_ui.app import create_app
from tests.helpers import NADRA

EXAMPLES = int(os.environ.get("EDGE_FUZZ_EXAMPLES", "25"))
pytestmark = [
    pytest.mark.slow,
    # Known gaps, each a schema/server disagreement still to close (hardening item 10): CNIC,
    # phone and name formats not declared, dates (2026-02-30), integer vs 1.0, PATCH with an
    # empty body, a service listed twice, skill codes, the pause reason one state needs.
    # strict: once they are closed this marker must go.
    pytest.mark.xfail(strict=True, reason="schema still allows some bodies the server refuses"),
]

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
        case.call_and_validate(headers=sent)

    try:
        run()
    except (Exception, BaseExceptionGroup) as exc:  # schemathesis failure group
        return f"{operation.method.upper()} {operation.path} [{mode}]: {exc}"
    return None


def valid(result: Ok[Operation] | Err[InvalidSchema]) -> Operation:
    """The operation of the document, or a failure naming why the document is invalid."""
    if isinstance(result, Err):
        raise AssertionError(f"invalid API document: {result.err()}")
    return result.ok()


def test_api_fuzz(node: Node) -> None:
    """0 server errors, 0 responses outside the document, valid accepted, invalid refused."""
    app = create_app(node, {"TESTING": False})
    headers = log_in(app, "manager")
    ids = seed_ids(app, headers)
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    failures = [failure for result in schema.get_all_operations() for mode in MODES
                if (failure := fuzz_operation(app, valid(result), mode, headers, ids))]
    assert not failures, f"{len(failures)} failing operations:\n" + "\n\n".join(failures)
