"""`edge-hq citizen show|reads`, `edge-hq fleet-key rotate|distribute|status|retire` and
`edge-hq pii-key rotate`: HQ's audited reads of citizen data, the fleet blind-index key
and HQ's own field key (hq/pii.py, hq/fleet_keys.py, hq/pii_rotate.py)."""

from __future__ import annotations

import json
from typing import Any

import click

from hq import fleet_keys, lookups, pii_rotate
from hq import pii as hq_pii
from hq.cli.common import open_store
from hq.store import utc_now
from sync.pii import normalise_cnic


def _echo(data: Any, as_json: bool) -> None:
    """JSON, or one `key=value` line per row."""
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    for row in data if isinstance(data, list) else [data]:
        click.echo("  ".join(f"{k}={v}" for k, v in row.items()))


@click.group("citizen")
def citizen() -> None:
    """Read a citizen's data at HQ (every read is audited)."""


@citizen.command("show")
@click.option("--cnic", default=None, help="CNIC, with or without dashes.")
@click.option("--id", "citizen_id", default=None, help="Citizen id (as the node made it).")
@click.option("--actor", required=True, help="Who reads (recorded in the audit).")
@click.option("--purpose", required=True, help="Why (recorded in the audit).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def show(ctx: click.Context, cnic: str | None, citizen_id: str | None, actor: str,
         purpose: str, as_json: bool) -> None:
    """Decrypt one citizen's CNIC, name and phone; records who, when, which and why.

    Example: edge-hq citizen show --cnic 35202-1234567-1 --actor amina --purpose "case 42"
    """
    if (cnic is None) == (citizen_id is None):
        raise click.ClickException("give exactly one of --cnic and --id")
    if cnic is not None:
        try:
            cnic = normalise_cnic(cnic.strip())
        except ValueError as exc:
            raise click.ClickException("--cnic: must be a CNIC of 13 digits, "
                                       "XXXXX-XXXXXXX-X") from exc
    db = open_store(ctx.obj["db"])
    try:
        found = hq_pii.read_citizen(db, actor, purpose, citizen_id=citizen_id, cnic=cnic,
                                    now=utc_now())
    except (LookupError, ValueError, hq_pii.PIIKeyError) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        db.close()
    _echo(found, as_json)


@citizen.command("reads")
@click.option("--id", "citizen_id", default=None, help="Only the reads of this citizen.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def reads_cmd(ctx: click.Context, citizen_id: str | None, as_json: bool) -> None:
    """The audit of HQ's reads of citizen data, newest first: reads at HQ (node_id empty)
    and nodes' reception lookups (who at which node, found / not_found / rate_limited).

    Example: edge-hq citizen reads --id 01a2372d-6eed-79d1-a6e1-23d6084ed606
    """
    db = open_store(ctx.obj["db"])
    try:
        rows = [{**{k: r[k] for k in ("at", "actor")}, "node_id": None,
                 "citizen_id": r["citizen_id"], "purpose": r["purpose"]}
                for r in hq_pii.reads(db, citizen_id)]
        rows += [{**{k: r[k] for k in ("at", "actor", "node_id", "citizen_id")},
                  "purpose": f"lookup {r['outcome']} (request {r['request']})"}
                 for r in lookups.lookups(db, citizen_id)]
        _echo(sorted(rows, key=lambda r: r["at"], reverse=True), as_json)
    finally:
        db.close()


@click.group("fleet-key")
def fleet_key() -> None:
    """The fleet blind-index key: rotate it, deliver it, retire old versions."""


def _run(ctx: click.Context, action: Any) -> Any:
    """Run one key action on the store, with one-line errors."""
    db = open_store(ctx.obj["db"])
    try:
        return action(db)
    except hq_pii.PIIKeyError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        db.close()


@fleet_key.command("rotate")
@click.pass_context
def rotate(ctx: click.Context) -> None:
    """Make the next version, queue it to every node, re-index HQ's citizens under it.

    Example: edge-hq fleet-key rotate
    """
    done = _run(ctx, fleet_keys.rotate)
    click.echo(f"fleet key version {done['version']}: queued to {done['queued']} nodes, "
               f"{done['reindexed']} citizens re-indexed at HQ; older versions are retired "
               "when every node has acknowledged it (edge-hq fleet-key status)")


@fleet_key.command("distribute")
@click.pass_context
def distribute(ctx: click.Context) -> None:
    """Queue the current version (made if none) to nodes that do not have it yet (after
    upgrading HQ: nodes enrolled before fleet keys).

    Example: edge-hq fleet-key distribute
    """
    done = _run(ctx, fleet_keys.distribute)
    click.echo(f"fleet key version {done['version']}: queued to {done['queued']} nodes")


@fleet_key.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Each version: when made, when retired, which nodes have not acknowledged it.

    Example: edge-hq fleet-key status
    """
    rows = _run(ctx, fleet_keys.status)
    _echo([{**r, "pending": ",".join(r["pending"]) or "-"} for r in rows]
          if not as_json else rows, as_json)


@fleet_key.command("retire")
@click.pass_context
def retire(ctx: click.Context) -> None:
    """Retire older versions now if every node has acknowledged the current one (this also
    happens on each downstream ack).

    Example: edge-hq fleet-key retire
    """
    retired = _run(ctx, lambda db: db.retrying(fleet_keys.retire_acked))
    click.echo(f"retired versions: {', '.join(map(str, retired)) or 'none'}")


@click.group("pii-key")
def pii_key() -> None:
    """HQ's own PII field key (citizens' data at rest at HQ): rotate it."""


@pii_key.command("rotate")
@click.option("--batch", "batch", type=click.IntRange(1, 100_000), default=pii_rotate.BATCH,
              show_default=True, help="Records re-encrypted per transaction.")
@click.pass_context
def pii_key_rotate(ctx: click.Context, batch: int) -> None:
    """Make a new key version, re-encrypt every PII value HQ holds under it, then retire
    the old version from the key file. Interrupted, it is finished by running it again.
    Back up the key file afterwards (README "HQ store protection").

    Example: edge-hq --db postgresql://hq@db/hq --pii-key /etc/edge-hq/pii.key pii-key rotate
    """
    def progress(table: str, done: int, total: int) -> None:
        click.echo(f"  {table}: {done}/{total} records", err=True)

    def run(db: Any) -> Any:
        click.echo(f"rotating {db.pii_keys.path if db.pii_keys else 'the PII key'}", err=True)
        return pii_rotate.rotate(db, batch=batch, progress=progress)
    done = _run(ctx, run)
    retired = ", ".join(map(str, done["retired"])) or "none"
    click.echo(f"PII key version {done['version']}: {done['reencrypted']} values re-encrypted, "
               f"retired versions: {retired}; back up the key file now")
