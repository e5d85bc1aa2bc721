"""`edge-node enroll request|install`: join the fleet without the node key ever leaving it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from certs.enroll import EnrollError, install, make_request, read_json, request_digest
from certs.files import write_atomic
from certs.layout import NODE_CERT, NODE_KEY
from edge_node.cli.common import opened_node
from edge_node.node import Node
from edge_node.paths import exported_through, sync_dir
from edge_node.replication.fleet_key import install_fleet_key, open_sealed
from edge_node.replication.port import NodeOutbox


@click.group()
def enroll() -> None:
    """Enroll this node with HQ (CSR out, signed bundle in)."""


@enroll.command("request")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Request file (default enroll-<node>.json in the current directory).")
@click.pass_context
def enroll_request(ctx: click.Context, out: str | None) -> None:
    """Create the node's keys (once) and write the request to carry to HQ.

    Example: edge-node enroll request --out /media/usb/enroll-NABCDE.json
    """
    with opened_node(ctx) as node:
        directory = sync_dir(node.settings)
        _refuse_if_unsynced(node, directory)
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        request = make_request(directory, node.node_id, node.center_id)
    target = Path(out or f"enroll-{request['node_id']}.json")
    write_atomic(target, json.dumps(request, indent=2).encode())
    click.echo(f"request for node {request['node_id']} written to {target}")
    click.echo(f"request digest (read it to HQ to confirm): {request_digest(request)}")


@enroll.command("install")
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False))
@click.option("--ca-fingerprint", required=True,
              help="SHA-256 fingerprint of HQ's CA, as printed by `edge-hq ca init`.")
@click.pass_context
def enroll_install(ctx: click.Context, bundle: str, ca_fingerprint: str) -> None:
    """Verify HQ's enrollment bundle and install it; the node then syncs when online.

    Example: edge-node enroll install enroll-NABCDE.bundle.json --ca-fingerprint 3A:1F:…
    """
    with opened_node(ctx) as node:
        directory = sync_dir(node.settings)
        if not (directory / NODE_KEY).exists():
            raise click.ClickException("no node key: run `edge-node enroll request` first")
        try:
            cert = install(directory, read_json(Path(bundle), "enrollment bundle"),
                           ca_fingerprint, node.node_id)
        except EnrollError as exc:
            raise click.ClickException(f"bundle refused: {exc}") from exc
        moved = _install_fleet_key(node, read_json(Path(bundle), "enrollment bundle"))
    click.echo(f"enrolled: node {node.node_id}, certificate valid until "
               f"{cert.not_valid_after_utc:%Y-%m-%d}")
    if moved is not None:
        click.echo(f"fleet index key version {moved[0]} installed; "
                   f"{moved[1]} citizens re-indexed")


def _install_fleet_key(node: Node, bundle: dict[str, Any]) -> tuple[int, int] | None:
    """Open the bundle's sealed fleet key and re-index the citizens: (version, re-indexed),
    or None for a bundle from an HQ without fleet keys (they come downstream later)."""
    if "fleet_key" not in bundle:
        return None
    try:
        version, key = open_sealed(node, bundle["fleet_key"])
    except ValueError as exc:
        raise click.ClickException(f"bundle installed, but its fleet key is unusable: {exc}"
                                   ) from exc
    return version, node.write(lambda db: install_fleet_key(db, node, version, key))


def _refuse_if_unsynced(node: Node, directory: Path) -> None:
    """Re-enrolling a node with unsynced records would strand them: refuse unless exported."""
    if not (directory / NODE_CERT).exists():
        return
    stats = NodeOutbox(node).stats()
    exported = exported_through(Path(node.settings["data_dir"]))
    if stats["count"] and (stats["last_seq"] or 0) > exported:
        raise click.ClickException(
            f"this node holds {stats['count']} unsynced records; sync them "
            "(`edge-node sync push`) or export them (`edge-node sync export`) first")

