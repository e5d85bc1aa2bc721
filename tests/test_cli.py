"""The `edge-node` command: init, help texts with examples, clear errors."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from edge_node.cli.main import main


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every leaf command path of the CLI."""
    out: list[tuple[str, ...]] = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            out += _commands(command, (*prefix, name))
        else:
            out.append((*prefix, name))
    return out


@pytest.mark.parametrize("path", _commands(main), ids=" ".join)
def test_every_command_has_help_with_an_example(path: tuple[str, ...]) -> None:
    """STYLE: each command's help text shows an Example."""
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0
    assert "Example:" in result.output


def test_every_command_is_in_the_readme() -> None:
    """A command missing from the README's table is undocumented."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for path in _commands(main):
        assert f"edge-node {' '.join(path)}" in readme, path


def test_init_then_refuse_second_init(tmp_path: Path) -> None:
    """Init prints the node id; a second init changes nothing and says why."""
    runner = CliRunner()
    data = str(tmp_path / "n")
    first = runner.invoke(main, ["--data-dir", data, "init", "--center-id", "LHR-02"])
    assert first.exit_code == 0, first.output
    assert "of center LHR-02 created" in first.output
    second = runner.invoke(main, ["--data-dir", data, "init", "--center-id", "LHR-02"])
    assert second.exit_code == 1
    assert "exists already" in second.output and "Traceback" not in second.output


@pytest.mark.parametrize("center", ["", "x", "isb-01", "ISB 01", "A" * 17, "-ISB"])
def test_init_refuses_bad_center_ids(tmp_path: Path, center: str) -> None:
    """Center ids are short capitals/digits/dashes; nothing is created otherwise."""
    data = tmp_path / "n"
    result = CliRunner().invoke(main, ["--data-dir", str(data), "init", "--center-id", center])
    assert result.exit_code != 0
    assert "center id" in result.output.lower()
    assert not (data / "node.db").exists()


def test_commands_need_an_initialised_node(tmp_path: Path) -> None:
    """Using a node before init says what to do."""
    result = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "audit", "verify"])
    assert result.exit_code == 1
    assert "edge-node init" in result.output
