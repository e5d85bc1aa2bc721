"""`edge-hq console` (the web console under waitress) and `edge-hq account add|list`."""

from __future__ import annotations

import getpass

import click
import pyotp
import waitress

from hq.cli.common import open_store, print_rows
from hq.cli.pki import keys_option
from hq.console import accounts, actions, demo
from hq.console.app import create_app
from hq.store import StoreError


def cli_actor() -> str:
    """Who ran an account command, for the audit."""
    return f"cli:{getpass.getuser()}"


@click.command("console")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (anything but loopback gets Secure cookies: put "
                   "TLS in front).")
@click.option("--port", type=click.IntRange(1, 65535), default=8090, show_default=True)
@click.option("--demo", "with_demo", is_flag=True,
              help="On a store with no nodes and no accounts: simulated centers and nodes and "
                   "one demo account per role (printed with their TOTP secrets).")
@click.option("--threads", type=click.IntRange(1, 32), default=4, show_default=True)
@keys_option
@click.pass_context
def console(ctx: click.Context, host: str, port: int, with_demo: bool, threads: int,
            keys_dir: str) -> None:
    """Serve the HQ web console.

    Example: edge-hq console --port 8090
    """
    if with_demo:
        db = open_store(ctx.obj["db"])
        try:
            made = demo.fill(db)
        finally:
            db.close()
        if made is None:
            click.echo("demo: the store already has nodes or accounts; nothing added")
        for line in demo.describe(made or []):
            click.echo(line)
    try:
        app = create_app(ctx.obj["db"], host=host, keys_dir=keys_dir)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"HQ console on http://{host}:{port}/")
    waitress.serve(app, host=host, port=port, threads=threads, ident="edge-hq")


@click.group("account")
def account() -> None:
    """HQ console accounts."""


@account.command("add")
@click.argument("username")
@click.option("--role", type=click.Choice(accounts.ROLES), required=True)
@click.option("--agency", default=None, help="The agency of an agency_officer.")
@click.password_option("--password", help="At least 12 characters (asked when not given).")
@click.pass_context
def account_add(ctx: click.Context, username: str, role: str, agency: str | None,
                password: str) -> None:
    """Add an account; prints its TOTP provisioning URI and secret once.

    Example: edge-hq account add amina --role monitoring_officer
    """
    db = open_store(ctx.obj["db"])
    try:
        with db.transaction() as tx:
            uri = accounts.add(tx, username, password, role, agency)
            actions.record(tx, cli_actor(), "account_add", username, "ok")
    except accounts.AccountError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        db.close()
    click.echo(f"account {username} ({role}) added. Scan this into an authenticator app; "
               "it is not shown again:")
    click.echo(f"  {uri}")
    click.echo(f"  secret: {pyotp.parse_uri(uri).secret}")


@account.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def account_list(ctx: click.Context, as_json: bool) -> None:
    """Every account: role, agency, active, failures, locked until (no secrets)."""
    db = open_store(ctx.obj["db"])
    try:
        print_rows(accounts.listing(db), as_json)
    finally:
        db.close()
