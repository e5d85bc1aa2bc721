"""One sync status (edge_node.replication.status) behind the CLI, the API and the screens,
which only format it."""

from __future__ import annotations

import json
from collections.abc import Callable

from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient

from edge_node.bootstrap import DEMO_PASSWORD_SUFFIX
from edge_node.cli.main import main as node_cli
from edge_node.node import Node
from edge_node.replication.status import LIVE_FIELDS, SyncStatus, sync_status
from tests.ui.test_ui_guards import make_ticket

AGED = "oldest_age_s"  # moves with the clock between two reads


def _without(figures: dict[str, object], *names: str) -> dict[str, object]:
    """The figures but `names`."""
    return {k: v for k, v in figures.items() if k not in names}


def test_cli_api_and_screens_show_one_status(node: Node, ui_app: Flask,
                                             ui_client: Callable[[str | None], FlaskClient]
                                             ) -> None:
    """`sync status --json`, /api/sync/status, /sync and /technician agree with sync_status."""
    api, screens = ui_app.test_client(), ui_client("technician")  # logins write audit rows
    token = api.post("/api/auth/login", json={
        "username": "technician", "password": "technician" + DEMO_PASSWORD_SUFFIX}).get_json()
    for _ in range(3):
        make_ticket(node)
    status = sync_status(node)
    assert isinstance(status, SyncStatus) and status.count > 0 and not status.enrolled
    assert not status.agent_running and status.in_flight_batches == 0
    expected = _without(status.as_dict(), AGED)

    shown = api.get("/api/sync/status",
                    headers={"Authorization": f"Bearer {token['token']}"}).get_json()
    assert _without(shown, AGED) == expected

    cli = CliRunner().invoke(node_cli, ["--data-dir", node.settings["data_dir"],
                                        "sync", "status", "--json"])
    assert cli.exit_code == 0, cli.output
    assert _without(json.loads(cli.output), AGED) == _without(expected, *LIVE_FIELDS)

    page = screens.get("/sync").get_data(as_text=True)
    assert f'data-sync="count">{status.count}<' in page
    assert f"<dd>{status.count}</dd>" in screens.get("/technician").get_data(as_text=True)
