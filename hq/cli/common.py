"""What every `edge-hq` command shares: opening HQ's store with one-line errors."""

from __future__ import annotations

import json
from typing import Any

import click

from hq.store import HQDatabase, StoreError


def open_store(url: str) -> HQDatabase:
    """Open the store or fail with one line."""
    try:
        return HQDatabase(url)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc
    except Exception as exc:
        raise click.ClickException(f"cannot open HQ store {url.split('@')[-1]}: "
                                   f"{type(exc).__name__}") from exc


def print_rows(rows: Any, as_json: bool) -> None:
    """JSON or one line per row."""
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    for row in rows:
        click.echo("  ".join(f"{k}={v}" for k, v in row.items()))
