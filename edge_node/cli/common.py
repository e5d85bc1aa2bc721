"""What every `edge-node` command shares: settings from the global options, the opened
node, and expected failures as one-line errors (no traceback)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from edge_node.config import ConfigError, Settings, load_settings
from edge_node.errors import EdgeError
from edge_node.node import Node
from edge_node.store.db import StoreError
from edge_node.store.keyfile import KeyFileError

USER_ERRORS = (ConfigError, EdgeError, StoreError, KeyFileError)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn expected failures into one-line CLI errors."""
    try:
        yield
    except USER_ERRORS as exc:
        raise click.ClickException(getattr(exc, "message", None) or str(exc)) from exc


def settings_of(ctx: click.Context, **overrides: Any) -> Settings:
    """Settings for this invocation (global options, file, environment, overrides)."""
    opts = ctx.find_root().params
    with user_errors():
        return load_settings(opts.get("data_dir"), opts.get("config"),
                             {k: v for k, v in overrides.items() if v is not None})


@contextmanager
def opened_node(ctx: click.Context) -> Iterator[Node]:
    """Open the node for one command and close it afterwards."""
    with user_errors():
        node = Node(settings_of(ctx))
    try:
        yield node
    finally:
        node.close()
