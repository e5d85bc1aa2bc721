"""`edge-hq api-token create|revoke|list`: bearer tokens of the read-only JSON API."""

from __future__ import annotations

import click

from hq.cli.common import open_store, print_rows
from hq.cli.console import cli_actor
from hq.console import actions, api_tokens


@click.group("api-token")
def api_token() -> None:
    """Tokens of the read-only JSON API (/api/v1)."""


@api_token.command("create")
@click.option("--account", "username", required=True, help="The console account it acts for.")
@click.pass_context
def token_create(ctx: click.Context, username: str) -> None:
    """Make a token; it is printed once and only its SHA-256 is kept.

    Example: edge-hq api-token create --account nadra-officer
    """
    db = open_store(ctx.obj["db"])
    try:
        with db.transaction() as tx:
            token_id, token = api_tokens.create(tx, username)
            actions.record(tx, cli_actor(), "api_token_create", username, "ok", None, token_id)
    except api_tokens.TokenError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        db.close()
    click.echo(f"API token {token_id} for {username} (not shown again):")
    click.echo(f"  {token}")


@api_token.command("revoke")
@click.argument("token_id")
@click.pass_context
def token_revoke(ctx: click.Context, token_id: str) -> None:
    """Revoke a token by its id (from `edge-hq api-token list`)."""
    db = open_store(ctx.obj["db"])
    try:
        with db.transaction() as tx:
            api_tokens.revoke(tx, token_id)
            actions.record(tx, cli_actor(), "api_token_revoke", token_id, "ok")
    except api_tokens.TokenError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        db.close()
    click.echo(f"API token {token_id} revoked")


@api_token.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def token_list(ctx: click.Context, as_json: bool) -> None:
    """Every token: id, account, role, agency, revoked (never the token)."""
    db = open_store(ctx.obj["db"])
    try:
        print_rows(api_tokens.listing(db), as_json)
    finally:
        db.close()
