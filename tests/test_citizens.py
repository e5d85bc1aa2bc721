"""Citizens: identifier validation, encrypted PII at rest, blind-index lookup, API and roles."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient

from edge_node.domain import citizens, pii
from edge_node.errors import ValidationError
from edge_node.node import Node
from edge_node.store.keyfile import NodeKeys
from sync.merge import State, merge, policy_for
from tests.helpers import NADRA, Headers, assert_error, ok, outbox_mark

Login = Callable[[str], Headers]

CNIC = "35202-1234567-1"
CNIC_PLAIN = "3520212345671"
NAME = "Ayesha Siddiqa Khan"
PHONE = "0300-1234567"
PHONE_E164 = "+923001234567"
PLAINTEXTS = (CNIC, CNIC_PLAIN, NAME, "Ayesha", "Siddiqa", PHONE, PHONE_E164, "3001234567")


def register(client: FlaskClient, headers: Headers, **fields: Any) -> Any:
    """POST /api/citizens with the default citizen, overridden by `fields`."""
    body = {"cnic": CNIC, "name": NAME, "phone": PHONE, **fields}
    return client.post("/api/citizens", json=body, headers=headers)


def citizen_rows(node: Node) -> list[dict[str, Any]]:
    """Every stored citizen row, as stored."""
    return list(node.reader().query("SELECT * FROM citizens"))


def assert_no_plaintext(texts: list[str]) -> None:
    """None of the known plaintext PII values occurs in any of `texts`."""
    for text in texts:
        for secret in PLAINTEXTS:
            assert secret not in text, f"plaintext PII found: {secret!r}"


# --- identifiers -------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "text", "province", "gender"), [
    ("35202-1234567-1", "35202-1234567-1", "Punjab", "male"),
    ("3520212345672", "35202-1234567-2", "Punjab", "female"),
    (" 61101-7654321-9 ", "61101-7654321-9", "Islamabad", "male"),
    ("17301-1111111-4", "17301-1111111-4", "Khyber Pakhtunkhwa", "female"),
    ("42101-2222222-3", "42101-2222222-3", "Sindh", "male"),
    ("54400-3333333-8", "54400-3333333-8", "Balochistan", "female"),
    ("71501-4444444-5", "71501-4444444-5", "Gilgit-Baltistan", "male"),
    ("21101-5555555-6", "21101-5555555-6", "FATA", "female"),
    ("۳۵۲۰۲-۱۲۳۴۵۶۷-۱", "35202-1234567-1", "Punjab", "male"),
])
def test_parse_cnic_normalises(raw: str, text: str, province: str, gender: str) -> None:
    """Dashed or plain (or Urdu digits) become the dashed form, with province and gender."""
    identity = citizens.parse_cnic(raw)
    assert (identity.text, identity.province, identity.gender) == (text, province, gender)


BAD_CNICS = [
    ("35202-1234567", citizens.CNIC_FORMAT),
    ("352021234567", citizens.CNIC_FORMAT),
    ("35202123456712", citizens.CNIC_FORMAT),
    ("3520-21234567-1", citizens.CNIC_FORMAT),
    ("35202 1234567 1", citizens.CNIC_FORMAT),
    ("35202-1234567-X", citizens.CNIC_FORMAT),
    ("abcdefghijklm", citizens.CNIC_FORMAT),
    ("05202-1234567-1", citizens.CNIC_PROVINCE),
    ("85202-1234567-1", citizens.CNIC_PROVINCE),
    ("9520212345671", citizens.CNIC_PROVINCE),
    ("35202-1234567-0", citizens.CNIC_LAST_ZERO),
    ("3520212345670", citizens.CNIC_LAST_ZERO),
]


@pytest.mark.parametrize(("raw", "message"), BAD_CNICS)
def test_parse_cnic_refuses(raw: str, message: str) -> None:
    """Each malformed number gets its own clear message, never echoing the input."""
    with pytest.raises(ValidationError) as caught:
        citizens.parse_cnic(raw)
    assert caught.value.message == message
    assert raw.replace("-", "") not in caught.value.message


def test_last_digit_zero_message_says_it_is_not_used() -> None:
    """The message explains the rule rather than just refusing."""
    assert "0 is not used" in citizens.CNIC_LAST_ZERO


@pytest.mark.parametrize(("raw", "expected"), [
    ("0300-1234567", "+923001234567"),
    ("03001234567", "+923001234567"),
    ("+923451234567", "+923451234567"),
    ("+92 345 1234567", "+923451234567"),
    ("00923211234567", "+923211234567"),
    ("۰۳۰۰-۱۲۳۴۵۶۷", "+923001234567"),
])
def test_phone_normalises(raw: str, expected: str) -> None:
    """Mobile numbers in the usual local forms become +923..."""
    assert citizens.normalise_phone(raw) == expected


@pytest.mark.parametrize("raw", [
    "0300-123456", "0300-12345678", "051-1234567", "0421234567", "+924212345678",
    "+9230012345678", "phone", "+1 212 555 0100", "03OO-1234567",
])
def test_phone_refuses(raw: str) -> None:
    """Landlines, wrong lengths and foreign numbers are refused with the accepted forms."""
    with pytest.raises(ValidationError, match="03XX-XXXXXXX or \\+923XXXXXXXXX"):
        citizens.normalise_phone(raw)


# --- field encryption -----------------------------------------------------------------------

def test_encrypt_round_trip_and_fresh_nonce(node: Node) -> None:
    """Each encryption is different (random nonce) and decrypts back."""
    first = pii.encrypt(node.keys, "citizens", "name_enc", NAME)
    second = pii.encrypt(node.keys, "citizens", "name_enc", NAME)
    assert first != second and first.startswith("v1:")
    assert pii.decrypt(node.keys, "citizens", "name_enc", first) == NAME


def test_ciphertext_is_bound_to_its_column(node: Node) -> None:
    """A value moved to another column (or table) does not decrypt."""
    sealed = pii.encrypt(node.keys, "citizens", "phone_enc", PHONE_E164)
    with pytest.raises(pii.PIIError, match="does not decrypt"):
        pii.decrypt(node.keys, "citizens", "cnic_enc", sealed)
    with pytest.raises(pii.PIIError):
        pii.decrypt(node.keys, "volunteers", "phone_enc", sealed)


@pytest.mark.parametrize("stored", ["plain text", "v1:", "v1:!!!not base64!!!", "v2:AAAA"])
def test_garbage_does_not_decrypt(node: Node, stored: str) -> None:
    """Malformed or foreign values raise PIIError naming the column, not the value."""
    with pytest.raises(pii.PIIError, match=r"^citizens\.cnic_enc: "):
        pii.decrypt(node.keys, "citizens", "cnic_enc", stored)


def test_tampered_ciphertext_is_refused(node: Node) -> None:
    """Flipping one bit fails the GCM tag."""
    sealed = pii.encrypt(node.keys, "citizens", "cnic_enc", CNIC)
    raw = bytearray(base64.b64decode(sealed[3:]))
    raw[-1] ^= 1
    tampered = "v1:" + base64.b64encode(bytes(raw)).decode()
    with pytest.raises(pii.PIIError):
        pii.decrypt(node.keys, "citizens", "cnic_enc", tampered)


def test_blind_index_is_keyed_and_deterministic(node: Node) -> None:
    """Same key and value give the same index; another key gives another."""
    other = NodeKeys(db_key=b"\0" * 32, pii_key=b"\1" * 32, index_key=b"\2" * 32)
    index = pii.blind_index(node.keys, CNIC)
    assert index == pii.blind_index(node.keys, CNIC)
    assert index != pii.blind_index(other, CNIC)
    assert len(index) == 64 and CNIC_PLAIN not in index


# --- the API --------------------------------------------------------------------------------

def test_register_returns_normalised_citizen(client: FlaskClient, login: Login) -> None:
    """201 with the dashed CNIC, +92 phone, and province/gender read from the CNIC."""
    body = ok(register(client, login("reception"), cnic=CNIC_PLAIN, name="  Ayesha   Siddiqa "
                       "Khan "), 201)
    assert body["cnic"] == CNIC and body["name"] == NAME and body["phone"] == PHONE_E164
    assert (body["province"], body["gender"], body["id_kind"]) == ("Punjab", "male", "cnic")


def test_register_without_phone_and_as_bform(client: FlaskClient, login: Login) -> None:
    """Phone is optional; a B-form (CRC) number uses the same format."""
    body = ok(client.post("/api/citizens", json={"cnic": "61101-7654321-2", "name": "Zainab",
                                                  "id_kind": "crc"},
                          headers=login("reception")), 201)
    assert body["phone"] is None and body["id_kind"] == "crc" and body["gender"] == "female"


def test_stored_row_has_no_plaintext(client: FlaskClient, login: Login, node: Node) -> None:
    """CNIC, name and phone are stored only as v1 ciphertexts; no gender/province columns."""
    ok(register(client, login("reception")), 201)
    [row] = citizen_rows(node)
    assert set(row) == {"id", "cnic_index", "cnic_enc", "name_enc", "phone_enc", "id_kind",
                        "created_at", "updated_at", "field_hlc"}
    assert all(row[c].startswith("v1:") for c in ("cnic_enc", "name_enc", "phone_enc"))
    assert row["cnic_index"] == pii.blind_index(node.keys, CNIC)
    assert_no_plaintext([str(v) for v in row.values()])


def test_outbox_and_audit_have_no_pii(client: FlaskClient, login: Login, node: Node) -> None:
    """The change log carries ciphertexts; audit entries carry ids only."""
    headers = login("reception")
    citizen = ok(register(client, headers), 201)
    ok(client.patch(f"/api/citizens/{citizen['id']}", json={"phone": "0345-7654321"},
                    headers=headers))
    db = node.reader()
    outbox = [r[0] or "" for r in db.execute("SELECT data FROM sync_outbox").fetchall()]
    assert any(citizen["id"] in data for data in outbox)
    assert_no_plaintext(outbox)
    assert all("7654321" not in data for data in outbox)
    audit = [json.dumps(r) for r in db.query("SELECT * FROM audit_log")]
    assert_no_plaintext(audit)
    actions = {(r["action"], r["entity_id"]) for r in db.query("SELECT * FROM audit_log")}
    assert {("citizen.register", citizen["id"]), ("citizen.update", citizen["id"])} <= actions


def test_no_pii_in_logs(client: FlaskClient, login: Login,
                        caplog: pytest.LogCaptureFixture) -> None:
    """Registering, a failed duplicate and lookups log nothing that identifies the citizen."""
    caplog.set_level(logging.DEBUG)
    headers = login("reception")
    ok(register(client, headers), 201)
    assert_error(register(client, headers), 409)
    ok(client.get(f"/api/citizens/lookup?cnic={CNIC}", headers=headers))
    assert_no_plaintext([caplog.text])


def test_duplicate_cnic_is_409_with_existing_id(client: FlaskClient, login: Login,
                                                node: Node) -> None:
    """The same number in another spelling is the same citizen; nothing is written."""
    headers = login("reception")
    first = ok(register(client, headers), 201)
    before = outbox_mark(node)
    body = assert_error(register(client, headers, cnic=CNIC_PLAIN, name="Someone Else"), 409,
                        "registered already")
    assert first["id"] in body["error"] and CNIC_PLAIN not in body["error"]
    assert outbox_mark(node) == before and len(citizen_rows(node)) == 1


@pytest.mark.parametrize(("fields", "fragment"), [
    *[({"cnic": raw}, message) for raw, message in BAD_CNICS],
    ({"phone": "0511234567"}, citizens.PHONE_FORMAT),
    ({"phone": "+9230012345678"}, citizens.PHONE_FORMAT),
    ({"phone": "12345"}, citizens.PHONE_FORMAT),
    ({"name": "   "}, "name: must be 1-100 characters"),
    ({"name": "Ali\x00Khan"}, "name: must not contain control characters"),
    ({"name": "x" * 101}, "name: must be at most 100 characters"),
    ({"cnic": 3520212345671}, "cnic: expected string, got integer"),
    ({"cnic": None}, "cnic: is required"),
    ({"name": ["Ayesha"]}, "name: expected string, got array"),
    ({"phone": 3001234567}, "phone: expected string, got integer"),
    ({"id_kind": "passport"}, "id_kind: must be one of cnic, crc, nicop"),
    ({"gender": "female"}, "gender: unknown field"),
    ({"cnic_index": "0" * 64}, "cnic_index: unknown field"),
])
def test_register_validation(client: FlaskClient, login: Login, node: Node,
                             fields: dict[str, Any], fragment: str) -> None:
    """Each invalid registration is a 400 naming the problem; nothing is written."""
    headers = login("reception")
    before = outbox_mark(node)
    body = assert_error(register(client, headers, **fields), 400, fragment)
    assert CNIC_PLAIN not in json.dumps(body) and "1234567" not in json.dumps(body)
    assert outbox_mark(node) == before and citizen_rows(node) == []


def test_every_problem_is_listed(client: FlaskClient, login: Login, node: Node) -> None:
    """A bad CNIC, name and phone together give three messages at once."""
    headers = login("reception")
    before = outbox_mark(node)
    body = assert_error(register(client, headers, cnic="123", name=" ",
                                 phone="999"), 400)
    assert body["errors"] == [citizens.CNIC_FORMAT, "name: must be 1-100 characters",
                              citizens.PHONE_FORMAT]
    assert outbox_mark(node) == before


@pytest.mark.parametrize("user", ["kiosk", "display", "technician", "auditor"])
def test_roles_that_may_not_register(client: FlaskClient, login: Login, node: Node,
                                     user: str) -> None:
    """Only reception and counter staff handle citizen data."""
    headers = login(user)
    before = outbox_mark(node)
    assert_error(register(client, headers), 403, "may not do this")
    assert_error(client.get(f"/api/citizens/lookup?cnic={CNIC}", headers=headers), 403)
    assert outbox_mark(node) == before and citizen_rows(node) == []


@pytest.mark.parametrize("user", ["reception", "volunteer", "operator", "supervisor", "manager"])
def test_roles_that_may_register(client: FlaskClient, login: Login, user: str) -> None:
    """Reception desk and counter roles register and read citizens."""
    citizen = ok(register(client, login(user)), 201)
    assert ok(client.get(f"/api/citizens/{citizen['id']}", headers=login(user)))["cnic"] == CNIC


@pytest.mark.parametrize("spelling", [CNIC, CNIC_PLAIN, f" {CNIC} "])
def test_lookup_by_cnic(client: FlaskClient, login: Login, spelling: str) -> None:
    """Any accepted spelling finds the citizen through the blind index."""
    headers = login("reception")
    citizen = ok(register(client, headers), 201)
    found = ok(client.get("/api/citizens/lookup", query_string={"cnic": spelling},
                          headers=headers))
    assert found == citizen


@pytest.mark.parametrize(("query", "status", "fragment"), [
    ({"cnic": "61101-7654321-9"}, 404, "no citizen is registered with this CNIC"),
    ({"cnic": "61101-7654321-0"}, 400, "last digit 0 is not used"),
    ({"cnic": "123"}, 400, "must be 13 digits"),
    ({}, 400, "cnic: is required"),
    ({"cnic": CNIC, "name": "x"}, 400, "name: unknown field"),
])
def test_lookup_errors(client: FlaskClient, login: Login, node: Node, query: dict[str, str],
                       status: int, fragment: str) -> None:
    """Unknown numbers are 404, malformed ones 400; the number is never echoed."""
    headers = login("reception")
    ok(register(client, headers), 201)
    before = outbox_mark(node)
    body = assert_error(client.get("/api/citizens/lookup", query_string=query, headers=headers),
                        status, fragment)
    assert "7654321" not in json.dumps(body)
    assert outbox_mark(node) == before


def test_get_unknown_citizen(client: FlaskClient, login: Login) -> None:
    """A missing id is a 404 naming the id."""
    assert_error(client.get("/api/citizens/no-such-id", headers=login("operator")), 404,
                 "unknown citizen: no-such-id")


def test_patch_name_and_phone(client: FlaskClient, login: Login, node: Node) -> None:
    """Name and phone change (re-encrypted); the CNIC and blind index stay."""
    headers = login("reception")
    citizen = ok(register(client, headers), 201)
    [before] = citizen_rows(node)
    changed = ok(client.patch(f"/api/citizens/{citizen['id']}",
                              json={"name": "Ayesha Khan", "phone": "+92 321 0000001"},
                              headers=headers))
    assert changed["name"] == "Ayesha Khan" and changed["phone"] == "+923210000001"
    assert changed["cnic"] == CNIC and changed["created_at"] == citizen["created_at"]
    [after] = citizen_rows(node)
    assert after["cnic_enc"] == before["cnic_enc"] and after["cnic_index"] == before["cnic_index"]
    assert after["name_enc"] != before["name_enc"] and "Ayesha Khan" not in after["name_enc"]
    assert ok(client.get(f"/api/citizens/{citizen['id']}", headers=headers)) == changed


def test_patch_with_same_values_writes_nothing(client: FlaskClient, login: Login,
                                               node: Node) -> None:
    """Sending the current values is a no-op, not a new change to sync."""
    headers = login("reception")
    citizen = ok(register(client, headers), 201)
    before = outbox_mark(node)
    same = ok(client.patch(f"/api/citizens/{citizen['id']}", json={"phone": "03001234567"},
                           headers=headers))
    assert same == citizen and outbox_mark(node) == before


@pytest.mark.parametrize(("body", "status", "fragment"), [
    ({}, 400, "nothing to change"),
    ({"cnic": CNIC_PLAIN}, 400, "cnic: unknown field"),
    ({"phone": "042-1234567"}, 400, citizens.PHONE_FORMAT),
    ({"name": ""}, 400, "name: must be at least 1 characters"),
    ({"name": 7}, 400, "name: expected string, got integer"),
])
def test_patch_validation(client: FlaskClient, login: Login, node: Node, body: dict[str, Any],
                          status: int, fragment: str) -> None:
    """Bad edits are refused and write nothing."""
    headers = login("reception")
    citizen = ok(register(client, headers), 201)
    before = outbox_mark(node)
    assert_error(client.patch(f"/api/citizens/{citizen['id']}", json=body, headers=headers),
                 status, fragment)
    assert outbox_mark(node) == before


def test_patch_unknown_citizen_and_wrong_role(client: FlaskClient, login: Login,
                                              node: Node) -> None:
    """404 for a missing id, 403 for the kiosk; nothing written."""
    operator, kiosk = login("operator"), login("kiosk")
    before = outbox_mark(node)
    assert_error(client.patch("/api/citizens/nope", json={"name": "X"}, headers=operator), 404,
                 "unknown citizen")
    assert_error(client.patch("/api/citizens/nope", json={"name": "X"}, headers=kiosk), 403)
    assert outbox_mark(node) == before


def test_visit_can_name_a_registered_citizen(client: FlaskClient, login: Login) -> None:
    """Reception links the visit to the profile by id (the ticket carries no PII)."""
    headers = login("reception")
    citizen = ok(register(client, headers), 201)
    visit = ok(client.post("/api/visits", json={"services": [NADRA], "citizen_id": citizen["id"]},
                           headers=headers), 201)
    assert visit["visit"]["citizen_id"] == citizen["id"]
    assert_no_plaintext([json.dumps(visit)])


# --- per-field clocks for HQ's merge ----------------------------------------------------------

def test_field_clocks_follow_each_edit(client: FlaskClient, login: Login, node: Node) -> None:
    """Registration stamps every field; an edit restamps only what changed, keeping the base."""
    headers = login("reception")
    citizen = ok(register(client, headers), 201)
    [row] = citizen_rows(node)
    born = json.loads(row["field_hlc"])
    assert set(born) == set(citizens.CLOCKED_FIELDS)
    assert all(entry["base"] is None for entry in born.values())
    ok(client.patch(f"/api/citizens/{citizen['id']}", json={"phone": "03451112223"},
                    headers=headers))
    [row] = citizen_rows(node)
    after = json.loads(row["field_hlc"])
    assert after["name_enc"] == born["name_enc"] and after["cnic_enc"] == born["cnic_enc"]
    assert after["phone_enc"]["base"] == born["phone_enc"]["hlc"]
    assert after["phone_enc"]["hlc"] > born["phone_enc"]["hlc"]


def test_phone_edit_here_keeps_name_edit_elsewhere(client: FlaskClient, login: Login,
                                                   node: Node) -> None:
    """HQ's field merge of this node's changes with a later name edit from another node."""
    headers = login("reception")
    citizen = ok(register(client, headers), 201)
    ok(client.patch(f"/api/citizens/{citizen['id']}", json={"phone": "03451112223"},
                    headers=headers))
    changes = node.reader().execute(
        "SELECT op, data, hlc FROM sync_outbox WHERE tbl = 'citizens' ORDER BY seq").fetchall()
    created = json.loads(changes[0][1])
    clocks = json.loads(created["field_hlc"])
    foreign_clock = "9" * 15 + "-00000-NOTHER"  # another node, later than anything here
    clocks["name_enc"] = {"hlc": foreign_clock, "base": clocks["name_enc"]["hlc"]}
    foreign = {**created, "name_enc": "v1:other-node-name", "field_hlc": json.dumps(clocks)}
    state = State()
    for op, data, hlc in [*changes[:1], ("update", json.dumps(foreign), foreign_clock),
                          *changes[1:]]:
        state, conflicts = merge(state, policy_for("citizens"), op, json.loads(data), hlc)
    merged = state.visible()
    assert merged is not None and conflicts == []
    assert merged["name_enc"] == "v1:other-node-name"
    assert merged["phone_enc"] == json.loads(changes[-1][1])["phone_enc"]
