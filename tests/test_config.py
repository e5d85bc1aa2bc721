"""Settings: one documented table, TOML and environment, clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import get_type_hints

import pytest
from click.testing import CliRunner

from edge_node.cli.main import main
from edge_node.config import SETTINGS, ConfigError, Settings, as_settings, load_settings

DOCS = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_every_setting_is_documented(setting: object) -> None:
    """Each setting has help text and a row in docs/configuration.md."""
    name = setting.name  # type: ignore[attr-defined]
    assert len(setting.help) > 10  # type: ignore[attr-defined]
    text = DOCS.read_text(encoding="utf-8")
    assert f"| `{name}` | `EDGE_NODE_{name.upper()}` |" in text


def test_precedence_default_toml_env(tmp_path: Path) -> None:
    """Defaults < TOML < environment < overrides."""
    (tmp_path / "edge-node.toml").write_text('port = 9000\nhost = "0.0.0.0"\n')
    values = load_settings(str(tmp_path), environ={"EDGE_NODE_PORT": "9100"})
    assert values["host"] == "0.0.0.0" and values["port"] == 9100
    assert values["threads"] == 16
    values = load_settings(str(tmp_path), overrides={"port": 9200},
                           environ={"EDGE_NODE_PORT": "9100"})
    assert values["port"] == 9200


@pytest.mark.parametrize(("toml", "env", "message"), [
    ("colour = 'red'\n", {}, "unknown setting 'colour'"),
    ("port = 'eighty'\n", {}, "setting 'port' must be int"),
    ("port = 70000\n", {}, "must be 1-65535"),
    ("encrypt_db = 'maybe'\n", {}, "setting 'encrypt_db' must be bool"),
    ("port = \n", {}, "not valid TOML"),
    ("", {"EDGE_NODE_NO_SUCH": "1"}, "unknown setting 'no_such'"),
    ("", {"EDGE_NODE_THREADS": "0"}, "'threads' must be at least 1"),
    ("", {"EDGE_NODE_LOG_LEVEL": "LOUD"}, "log_level"),
])
def test_bad_settings_are_refused(tmp_path: Path, toml: str, env: dict[str, str],
                                  message: str) -> None:
    """A bad value names the setting and the source."""
    (tmp_path / "edge-node.toml").write_text(toml)
    with pytest.raises(ConfigError, match=message):
        load_settings(str(tmp_path), environ=env)


def test_config_show_lists_every_setting(tmp_path: Path) -> None:
    """`edge-node config show` prints each setting with its help."""
    result = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "config", "show"],
                                env={"EDGE_NODE_PORT": "9001"})
    assert result.exit_code == 0, result.output
    for setting in SETTINGS:
        assert setting.name in result.output and setting.help in result.output
    assert "port = 9001  (changed)" in result.output


def test_bad_config_is_one_line_in_the_cli(tmp_path: Path) -> None:
    """The CLI reports a config error without a traceback."""
    (tmp_path / "edge-node.toml").write_text("port = 'x'\n")
    result = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "config", "show"])
    assert result.exit_code == 1
    assert "Error:" in result.output and "Traceback" not in result.output
    assert "setting 'port' must be int" in result.output


def test_settings_type_declares_every_setting_with_its_type() -> None:
    """The Settings TypedDict and the SETTINGS table name the same settings, same types."""
    assert get_type_hints(Settings) == {s.name: s.kind for s in SETTINGS}


def test_as_settings_refuses_a_missing_or_mistyped_setting(tmp_path: Path) -> None:
    """Only a complete mapping of well-typed values becomes Settings (a bool is no int)."""
    good = load_settings(str(tmp_path), environ={})
    assert as_settings(dict(good)) == good
    missing = {k: v for k, v in good.items() if k != "port"}
    with pytest.raises(ConfigError, match="'port' is missing or not int"):
        as_settings(missing)
    with pytest.raises(ConfigError, match="'port' is missing or not int"):
        as_settings({**good, "port": True})
