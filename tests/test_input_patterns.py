"""The OpenAPI document declares exactly what the server accepts: CNIC, phone, name, dates.

The patterns are built from the parsers' own tables; these tests check, on many generated
inputs, that a value matches the declared pattern exactly when the parser accepts it, and
that the document a client downloads carries the constraints (read by a second, non-Python
regex engine too: jsonschema_rs).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import jsonschema
import jsonschema_rs
import pytest
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_node.api.schema import anchored
from edge_node.domain import citizens, volunteer_shifts, volunteers
from edge_node.errors import ValidationError
from tests.helpers import assert_error

# Characters the parsers treat specially, plus a few they refuse.
ALPHABET = ("0123456789۰۱۲۳۴۵۶۷۸۹٠١٢٣٤٥٦٧٨٩" + " \t\n\u3000\u00a0\x85\x1c-+()"
            + "aZé:/\x00\x07\x7f\u200b")


def accepts(parse: Callable[[str], Any], value: str) -> bool:
    """True when the parser takes `value`."""
    try:
        parse(value)
    except ValidationError:
        return False
    return True


def parse_date(value: str) -> Any:
    """The date parser the volunteer routes use."""
    return volunteer_shifts.parse_day(value, "date")


PAIRS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "cnic": (citizens.CNIC_PATTERN, citizens.parse_cnic),
    "phone": (citizens.PHONE_PATTERN, citizens.normalise_phone),
    "name": (citizens.NAME_PATTERN, citizens.check_name),
    "hhmm": (volunteer_shifts.HHMM_PATTERN, lambda v: volunteer_shifts.minutes(v, "t")),
    "skill": (volunteers.SKILL_PATTERN, lambda v: volunteers.check_skills([v])),
}


@pytest.mark.parametrize("kind", PAIRS)
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_pattern_matches_exactly_what_the_parser_accepts(kind: str, data: st.DataObject) -> None:
    """Generated from the pattern: accepted; any text: matches iff accepted."""
    pattern, parse = PAIRS[kind]
    valid = data.draw(st.from_regex(pattern, fullmatch=True).filter(lambda v: len(v) <= 100))
    assert accepts(parse, valid), ascii(valid)
    shaped = data.draw(st.sampled_from([valid[:i] + c + valid[i:] for i in range(len(valid) + 1)
                                        for c in "0-۵ \x00"] or [""]))
    text = data.draw(st.one_of(st.text(ALPHABET, max_size=30), st.just(shaped)))
    assert (re.fullmatch(pattern, text) is not None) == accepts(parse, text), ascii(text)


@settings(max_examples=200, deadline=None)
@given(text=st.one_of(st.text("0123456789-W٢", max_size=11), st.dates().map(str),
                      st.from_regex(volunteer_shifts.DATE_PATTERN, fullmatch=True)))
def test_date_schema_matches_exactly_what_the_parser_accepts(text: str) -> None:
    """Pattern and `format: date` together (as a client checks them) = the server's parser."""
    schema = {"type": "string", "pattern": anchored(volunteer_shifts.DATE_PATTERN),
              "format": "date"}
    valid = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER).is_valid(text)
    assert valid == accepts(parse_date, text), text


def body_property(document: dict[str, Any], path: str, method: str, name: str) -> Any:
    """The schema of one request body property."""
    body = document["paths"][path][method]["requestBody"]["content"]["application/json"]
    return body["schema"]["properties"][name]


def query_parameter(document: dict[str, Any], path: str, name: str) -> Any:
    """The schema of one query parameter of a GET."""
    return next(p["schema"] for p in document["paths"][path]["get"]["parameters"]
                if p["name"] == name)


def check_examples(schema: dict[str, Any], good: list[Any], bad: list[Any]) -> None:
    """Both engines accept `good` and refuse `bad` by the declared schema."""
    python = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    rust = jsonschema_rs.validator_for(schema, validate_formats=True)
    for value in good:
        assert python.is_valid(value) and rust.is_valid(value), ascii(value)
    for value in bad:
        assert not python.is_valid(value) and not rust.is_valid(value), ascii(value)


def test_document_declares_cnic_and_phone(client: FlaskClient) -> None:
    """Register and lookup say what a CNIC and a phone are, Urdu digits included."""
    document = client.get("/api/openapi.json").get_json()
    cnic = body_property(document, "/api/citizens", "post", "cnic")
    assert cnic == query_parameter(document, "/api/citizens/lookup", "cnic")
    check_examples(cnic, ["35202-1234567-1", "3520212345671", " ۳۵۲۰۲-۱۲۳۴۵۶۷-۱ "],
                   ["35202-1234567-0", "85202-1234567-1", "35202-12345671", "35202", "", 35202])
    for path, method in (("/api/citizens", "post"), ("/api/citizens/{citizen_id}", "patch"),
                         ("/api/volunteers", "post")):
        phone = body_property(document, path, method, "phone")
        check_examples(phone, ["0300-1234567", "+92 300 1234567", "00923001234567",
                               "۰۳۰۰-۱۲۳۴۵۶۷", None],
                       ["0300-123456", "+93 300 1234567", "0400-1234567", "phone", ""])


def test_document_declares_real_dates(client: FlaskClient) -> None:
    """Every date parameter and field is a YYYY-MM-DD day that exists."""
    document = client.get("/api/openapi.json").get_json()
    dates = [query_parameter(document, "/api/kpi", "date"),
             query_parameter(document, "/api/feedback", "date"),
             query_parameter(document, "/api/volunteer-shifts", "date"),
             query_parameter(document, "/api/volunteers/hours", "from"),
             body_property(document, "/api/volunteers/{volunteer_id}/shifts", "post",
                           "business_date")]
    for schema in dates:
        assert schema["format"] == "date"
        check_examples(schema, ["2026-03-02", "2024-02-29"],
                       ["2026-02-30", "2026-13-01", "0000-01-01", "2026-W01-1", "02/03/2026",
                        "٢٠٢٦-٠٣-٠٢"])


def test_document_declares_rules_over_several_fields(client: FlaskClient) -> None:
    """PATCH changes something, pausing names a reason, the rest is listed for clients."""
    document = client.get("/api/openapi.json").get_json()

    def body(path: str, method: str) -> dict[str, Any]:
        schema: dict[str, Any] = document["paths"][path][method]["requestBody"]["content"][
            "application/json"]["schema"]
        return schema

    check_examples(body("/api/citizens/{citizen_id}", "patch"),
                   [{"name": "Ali"}, {"phone": None, "name": "Ali"}], [{}, {"name": None}])
    check_examples(body("/api/counters/{counter_id}/state", "post"),
                   [{"state": "paused", "reason": "prayer"}, {"state": "open"}],
                   [{"state": "paused"}, {"state": "paused", "reason": None}])
    check_examples(body("/api/visits", "post"), [{"services": ["a", "b"]}],
                   [{"services": ["a", "a"]}])
    shifts = document["paths"]["/api/volunteers/{volunteer_id}/shifts"]["post"]
    assert shifts["x-cross-field-rules"] == [volunteer_shifts.END_AFTER_START]


@pytest.mark.parametrize("query", ["/api/kpi?date=2026-02-30", "/api/feedback?date=2026-02-30",
                                   "/api/kpi?date=0000-01-01", "/api/feedback?date=2026-13-01"])
def test_days_that_do_not_exist_are_400(client: FlaskClient, login: Callable[[str], Any],
                                        query: str) -> None:
    """As the document says: a date parameter names a real day (was a 200 for an empty day)."""
    resp = client.get(query, headers=login("supervisor"))
    assert_error(resp, 400, "date: ")
