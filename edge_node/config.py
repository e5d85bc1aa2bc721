"""Node settings: one table of (name, default, help), read from TOML and environment.

Precedence, lowest first: the defaults below, the TOML file
(`<data-dir>/edge-node.toml` or `--config`), then `EDGE_NODE_<NAME>` variables.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict, TypeGuard

ENV_PREFIX = "EDGE_NODE_"
CONFIG_FILE_NAME = "edge-node.toml"


class ConfigError(ValueError):
    """A setting is unknown or has a value of the wrong type."""


@dataclass(frozen=True)
class Setting:
    """One documented setting."""

    name: str
    default: Any
    help: str

    @property
    def kind(self) -> type:
        """Python type every value of this setting must have."""
        return type(self.default)


SETTINGS: tuple[Setting, ...] = (
    Setting("data_dir", "./var", "Directory holding the database, key file and backups."),
    Setting("center_id", "", "Center identifier (e.g. ISB-01), set by `edge-node init`."),
    Setting("key_file", "", "Path of the database key file; empty means <data_dir>/node.key. "
            "Under systemd use $CREDENTIALS_DIRECTORY/edge-node-key."),
    Setting("encrypt_db", True,
            "Encrypt the database with SQLCipher. Only turn off in development."),
    Setting("host", "127.0.0.1", "Address the HTTP server listens on."),
    Setting("port", 8080, "TCP port the HTTP server listens on."),
    Setting("threads", 16, "Worker threads of the HTTP server."),
    Setting("max_body_bytes", 65536, "Largest accepted HTTP request body, in bytes."),
    Setting("writer_batch_max", 256, "Most write requests group-committed in one transaction."),
    Setting("session_idle_minutes", 30, "Staff sessions end after this many idle minutes."),
    Setting("login_max_failures", 5, "Failed logins in a row before an account locks."),
    Setting("lockout_minutes", 15, "How long a locked account stays locked."),
    Setting("no_show_grace_minutes", 10, "Minutes a no-show citizen may rejoin the queue."),
    Setting("priority_ratio", 2, "Priority tickets called in a row before a waiting normal ticket "
            "gets its turn (fair interleaving)."),
    Setting("kpi_snapshot_hour", 23, "Local hour (0-23) of the daily KPI snapshot job."),
    Setting("expiry_job_seconds", 60, "Interval of the no-show expiry job, in seconds."),
    Setting("timezone", "Asia/Karachi", "Time zone of the center, used for the business day."),
    Setting("sync_enabled", True, "Run the sync agent inside `edge-node serve` when the node "
            "is enrolled (sync directory present)."),
    Setting("sync_dir", "", "Directory of the node's sync keys and broker address; empty "
            "means <data_dir>/sync."),
    Setting("metrics_token", "", "Bearer token a Prometheus server on another host must send "
            "to scrape `/metrics`; loopback scrapers need none. Empty: `/metrics` answers "
            "loopback only."),
    Setting("log_level", "INFO", "Logging level: DEBUG, INFO, WARNING or ERROR."),
    Setting("doctor_disk_warn_mib", 1024, "`edge-node doctor` warns when the data directory's "
            "disk has less free space than this, in MiB."),
    Setting("doctor_disk_warn_percent", 10, "`edge-node doctor` also warns below this share "
            "of the disk free, in percent."),
    Setting("doctor_disk_fail_mib", 100, "`edge-node doctor` fails below this much free "
            "space, in MiB: writes are about to fail."),
    Setting("doctor_broker_timeout_seconds", 5, "How long `edge-node doctor` waits for the "
            "broker's TCP connect and TLS handshake."),
    Setting("backup_hour", 2, "Local hour (0-23) of the daily encrypted backup made by "
            "`edge-node serve`."),
    Setting("backup_keep", 14, "Backups kept in the backup directory; older ones are "
            "deleted after each backup."),
    Setting("backup_dir", "", "Directory of the daily backups; empty means <data_dir>/backups. "
            "Prefer another disk. The key file is not in a backup: keep a copy apart."),
    Setting("retention_days", 90, "Days the node keeps citizen PII, visit detail and collected "
            "applications once HQ has acknowledged them; removed daily by `edge-node serve` "
            "(or `edge-node retention run`), never at HQ. 0 keeps them forever."),
)

SETTINGS_BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}



class Settings(TypedDict):
    """Every setting's value, typed: what `load_settings` returns and `Node.settings` holds.

    One field per entry of SETTINGS, of its default's type (tests/test_config.py checks it).
    """

    data_dir: str
    center_id: str
    key_file: str
    encrypt_db: bool
    host: str
    port: int
    threads: int
    max_body_bytes: int
    writer_batch_max: int
    session_idle_minutes: int
    login_max_failures: int
    lockout_minutes: int
    no_show_grace_minutes: int
    priority_ratio: int
    kpi_snapshot_hour: int
    expiry_job_seconds: int
    timezone: str
    sync_enabled: bool
    sync_dir: str
    metrics_token: str
    log_level: str
    doctor_disk_warn_mib: int
    doctor_disk_warn_percent: int
    doctor_disk_fail_mib: int
    doctor_broker_timeout_seconds: int
    backup_hour: int
    backup_keep: int
    backup_dir: str
    retention_days: int


def is_settings(values: Mapping[str, Any]) -> TypeGuard[Settings]:
    """True when `values` has every declared setting, each of its declared type."""
    return all(name in values and _fits(setting, values[name])
               for name, setting in SETTINGS_BY_NAME.items())


def as_settings(values: Mapping[str, Any]) -> Settings:
    """`values` as Settings, or ConfigError naming the first missing or mistyped setting."""
    if not is_settings(values):
        wrong = next(name for name, setting in SETTINGS_BY_NAME.items()
                     if name not in values or not _fits(setting, values[name]))
        kind = SETTINGS_BY_NAME[wrong].kind.__name__
        raise ConfigError(f"setting '{wrong}' is missing or not {kind}")
    return values


def _fits(setting: Setting, value: Any) -> bool:
    """`value` has the setting's type (a bool is no int here)."""
    return isinstance(value, setting.kind) and not (setting.kind is int and isinstance(value, bool))


def _coerce(setting: Setting, raw: Any, source: str) -> Any:
    """Convert `raw` to the setting's type or raise ConfigError naming `source`."""
    kind = setting.kind
    if _fits(setting, raw):
        return raw
    if isinstance(raw, str):
        text = raw.strip()
        if kind is bool and text.lower() in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
            return text.lower() in {"1", "true", "yes", "on"}
        if kind is int:
            try:
                return int(text)
            except ValueError:
                pass
    raise ConfigError(
        f"{source}: setting '{setting.name}' must be {kind.__name__}, got {raw!r}"
    )


def _from_mapping(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Validate a mapping of setting name to value."""
    out: dict[str, Any] = {}
    for name, raw in values.items():
        setting = SETTINGS_BY_NAME.get(name)
        if setting is None:
            raise ConfigError(f"{source}: unknown setting '{name}' (see `edge-node config show`)")
        out[name] = _coerce(setting, raw, source)
    return out


def _from_toml(path: Path) -> dict[str, Any]:
    """Read settings from a TOML file; a missing file gives no settings."""
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return _from_mapping(data, str(path))


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """Read `EDGE_NODE_*` variables; unknown ones are an error, not ignored."""
    found = {
        key[len(ENV_PREFIX):].lower(): value
        for key, value in environ.items()
        if key.startswith(ENV_PREFIX)
    }
    return _from_mapping(found, "environment")


def load_settings(
    data_dir: str | None = None,
    config_file: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Return every setting's value: defaults < TOML < environment < overrides."""
    env = dict(os.environ if environ is None else environ)
    values = {s.name: s.default for s in SETTINGS}
    env_values = _from_env(env)
    chosen_dir = data_dir or env_values.get("data_dir") or values["data_dir"]
    toml_path = Path(config_file) if config_file else Path(chosen_dir) / CONFIG_FILE_NAME
    if config_file and not toml_path.exists():
        raise ConfigError(f"{toml_path}: config file not found")
    values.update(_from_toml(toml_path))
    values.update(env_values)
    values.update(_from_mapping(overrides or {}, "overrides"))
    if data_dir:
        values["data_dir"] = data_dir
    _check_ranges(values)
    return as_settings(values)


def _check_ranges(values: Mapping[str, Any]) -> None:
    """Reject values of the right type but outside their sensible range."""
    if not 1 <= values["port"] <= 65535:
        raise ConfigError(f"setting 'port' must be 1-65535, got {values['port']}")
    if not 0 <= values["kpi_snapshot_hour"] <= 23:
        raise ConfigError("setting 'kpi_snapshot_hour' must be 0-23")
    for name in ("threads", "max_body_bytes", "writer_batch_max", "session_idle_minutes",
                 "login_max_failures", "lockout_minutes", "expiry_job_seconds",
                 "priority_ratio"):
        if values[name] < 1:
            raise ConfigError(f"setting '{name}' must be at least 1, got {values[name]}")
    if values["retention_days"] < 0:
        raise ConfigError(f"setting 'retention_days' must be 0 (keep forever) or more, "
                          f"got {values['retention_days']}")
    if values["log_level"] not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError("setting 'log_level' must be DEBUG, INFO, WARNING or ERROR")
