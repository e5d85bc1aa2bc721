"""Fleet administration: enroll a node from its uploaded request, revoke one with a reason,
review quarantined payloads and overwritten edits.

Enrollment and revocation call what `edge-hq node sign|revoke` call (hq/enrollment.py,
hq/broker_sync.py), so the console and the CLI do the same. Fleet administrators and admins
act; monitoring officers and auditors read the lists. Every action is audited, refused
attempts too, with the reason given for a revocation.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, render_template, request
from flask_babel import gettext
from werkzeug.datastructures import FileStorage

from certs.authority import Authority, AuthorityError, open_authority
from certs.broker import BrokerConfigError, add_node_commands, remove_node_commands
from certs.enroll import MAX_FILE_BYTES, EnrollError, request_digest
from hq.broker_sync import BrokerNameError, BrokerOutcome, check_broker_name, refresh_brokers
from hq.console import actions, nav, security
from hq.enrollment import revoke, sign_request
from hq.fleet import conflict_rows, quarantine_rows
from hq.store import HQDatabase

bp = Blueprint("fleet_admin", __name__, url_prefix="/fleet/admin")
MAX_FIELD = 200
MAX_REASON = 500
NOT_HEX = re.compile(r"[^0-9a-f]")


class Refused(ValueError):
    """A form refused: `message` is shown (translated), `detail` is the technical cause."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.message, self.detail = message, detail


def _actor() -> str:
    """The signed-in account's name (views are guarded by `security.screen`)."""
    account = security.current_account()
    assert account is not None
    return str(account["username"])


def _page(status: int = 200, **extra: Any) -> tuple[str, int]:
    """The fleet administration page: forms for those who may act, then the lists."""
    account = security.current_account()
    assert account is not None
    with security.store().use() as db:
        nodes = [row[0] for row in db.execute(
            "SELECT node_id FROM hq_nodes WHERE revoked = 0 ORDER BY node_id").fetchall()]
        quarantine, conflicts = quarantine_rows(db), conflict_rows(db)
    return render_template("fleet_admin.html", nodes=nodes, quarantine=quarantine,
                           conflicts=conflicts, form=request.form,
                           can_act=account["role"] in nav.FLEET_ADMIN_ROLES, **extra), status


def _audit(action: str, target: str | None, outcome: str, detail: str | None) -> None:
    """One audited fleet action of the signed-in account."""
    with security.store().use() as db, db.transaction() as tx:
        actions.record(tx, _actor(), action, target, outcome, security.client(), detail)


def _authority() -> Authority:
    """HQ's CA from the console's key directory."""
    try:
        return open_authority(Path(current_app.config["HQ_KEYS"]))
    except AuthorityError as exc:
        raise Refused(gettext("HQ's keys cannot be used; nothing was changed."), str(exc)) from exc


@bp.get("/")
@security.screen(nav.FLEET_ROLES)
def index() -> tuple[str, int]:
    """Forms (fleet administrators, admins) and the quarantine and conflict lists."""
    _audit("view_fleet_admin", None, "ok", None)
    return _page()


def _field(name: str, limit: int = MAX_FIELD) -> str:
    """A stripped form field, or Refused when it is empty."""
    value = request.form.get(name, "").strip()[:limit]
    if not value:
        raise Refused(gettext("Fill in every field."), name)
    return value


def _read_request(upload: FileStorage | None) -> dict[str, Any]:
    """The uploaded enrollment request as a JSON object, or Refused."""
    if upload is None or not upload.filename:
        raise Refused(gettext("Choose the node's enrollment request file."))
    raw = upload.read(MAX_FILE_BYTES + 1)
    if len(raw) > MAX_FILE_BYTES:
        raise Refused(gettext("The file is too large."))
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Refused(gettext("This file is not an enrollment request; nothing was signed."),
                      "not JSON") from exc
    if not isinstance(data, dict):
        raise Refused(gettext("This file is not an enrollment request; nothing was signed."),
                      "not a JSON object")
    return data


def _broker_address() -> tuple[str, int]:
    """Broker host and port from the form (the port defaults to 8883)."""
    host = _field("broker_host")
    port_text = request.form.get("broker_port", "").strip() or "8883"
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise Refused(gettext("The broker port must be a number from 1 to 65535."), port_text)
    return host, int(port_text)


def _sign(db: HQDatabase, data: dict[str, Any], center: str, host: str,
          port: int) -> dict[str, Any]:
    """Check the broker name, then sign and register as `edge-hq node sign` does."""
    keys = Path(current_app.config["HQ_KEYS"])
    try:
        check_broker_name(keys, host, port)
        return sign_request(_authority(), db, data, center, host, port)
    except BrokerNameError as exc:
        raise Refused(gettext("The broker certificate is not valid for this broker host; "
                              "nothing was signed."), str(exc)) from exc
    except (EnrollError, ValueError) as exc:
        raise Refused(gettext("The request was refused; nothing was signed."), str(exc)) from exc


def _brokers(db: HQDatabase, commands: list[dict[str, Any]]) -> list[BrokerOutcome] | None:
    """Brokers changed live and their files rewritten; None when the files failed."""
    try:
        return refresh_brokers(Path(current_app.config["HQ_KEYS"]), db, commands)
    except (BrokerConfigError, OSError):
        return None


def _broker_summary(outcomes: list[BrokerOutcome] | None) -> tuple[str, str]:
    """Audit outcome and detail for the brokers' part."""
    if outcomes is None:
        return "broker_files_failed", "broker files not updated"
    if not outcomes:
        return "no_broker_recorded", "no broker directory recorded"
    live = all(outcome.where for outcome in outcomes)
    return ("ok" if live else "broker_not_changed",
            "; ".join(f"{o.out}: {o.where or o.error}" for o in outcomes))


@bp.post("/enroll")
@security.screen(nav.FLEET_ADMIN_ROLES)
def enroll() -> Response | tuple[str, int]:
    """Upload the request, compare its digest with the one the technician read out, sign,
    register the node, update the brokers and download the bundle."""
    target = None
    try:
        data = _read_request(request.files.get("request"))
        target = str(data.get("node_id", ""))[:64] or None
        actual = request_digest(data)
        heard = NOT_HEX.sub("", _field("digest").lower())
        if heard != actual:
            raise Refused(gettext("The digest of this file is %(actual)s, not the one the "
                                  "technician read out; nothing was signed. Ask for the "
                                  "request again.", actual=actual), f"heard {heard}")
        center, (host, port) = _field("center_id", 64), _broker_address()
        with security.store().use() as db:
            bundle = _sign(db, data, center, host, port)
            outcome, detail = _broker_summary(_brokers(db, add_node_commands(bundle["node_id"])))
    except Refused as exc:
        _audit("enroll_node", target, "refused", exc.detail or exc.message)
        return _page(400, error=exc.message, error_detail=exc.detail)
    _audit("enroll_node", bundle["node_id"], outcome,
           f"center {center}, broker {host}:{port}, digest {actual}; {detail}")
    name = f"enroll-{bundle['node_id']}.bundle.json"
    return Response(json.dumps(bundle, indent=2), mimetype="application/json",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


def _revocable(db: HQDatabase, node_id: str) -> None:
    """Refused unless `node_id` is enrolled and not yet revoked."""
    row = db.execute("SELECT revoked FROM hq_nodes WHERE node_id = ?", [node_id]).fetchone()
    if row is None:
        raise Refused(gettext("No such node."), node_id)
    if row[0]:
        raise Refused(gettext("This node is already revoked."), node_id)


@bp.post("/revoke")
@security.screen(nav.FLEET_ADMIN_ROLES)
def revoke_node() -> tuple[str, int]:
    """Revoke with a reason: CRL, ingest refuses it, the fleet is told, the brokers drop it."""
    node_id = request.form.get("node_id", "").strip()[:64]
    try:
        node_id = _field("node_id", 64)
        reason = request.form.get("reason", "").strip()[:MAX_REASON]
        if not reason:
            raise Refused(gettext("Give the reason for the revocation."), "no reason")
        auth = _authority()
        with security.store().use() as db:
            _revocable(db, node_id)
            serial = revoke(auth, db, node_id)
            outcomes = _brokers(db, remove_node_commands(node_id))
    except Refused as exc:
        _audit("revoke_node", node_id or None, "refused", exc.detail or exc.message)
        return _page(400, error=exc.message, error_detail=exc.detail)
    outcome, detail = _broker_summary(outcomes)
    _audit("revoke_node", node_id, outcome, f"reason: {reason}; serial {serial:x}; {detail}")
    return render_template("fleet_revoked.html", node_id=node_id, serial=f"{serial:x}",
                           outcomes=outcomes), 200
