"""Keep the brokers in step with enrollment and revocation (shared by `edge-hq node …`
and the console's fleet administration, so both do exactly the same).

`check_broker_name` refuses a broker host the broker certificate does not name (a node
given it could never connect). `refresh_brokers` changes each running broker live
(certs/broker_control.py), then rewrites every recorded broker directory with HQ's node
list, and says per broker what happened; a broker that could not be changed live must be
restarted (enrollment) or reloaded/restarted (revocation) to apply its updated files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from certs.broker import recorded_dirs, refresh_broker_dirs
from certs.broker_control import AdminEndpoint, BrokerUnreachable, send
from certs.hostnames import names_host, server_names
from hq.store import HQDatabase


class BrokerNameError(ValueError):
    """The broker certificate does not name the host a bundle would carry."""


@dataclass(frozen=True)
class BrokerOutcome:
    """One recorded broker directory: changed live at `where`, or not (`error` says why)."""

    out: str
    where: str
    error: str


def check_broker_name(keys: Path, host: str, port: int | str) -> bool:
    """Raise BrokerNameError when the broker certificate of `keys` does not name `host`;
    False when that certificate cannot be read (not checked), True when it names it."""
    path = keys / "broker.pem"
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return False
    if names_host(cert, host):
        return True
    names = server_names(cert)
    listed = ", ".join(names) or "no name at all"
    hint = f" (e.g. --broker {names[0]}:{port})" if names else ""
    raise BrokerNameError(
        f"--broker {host}: the broker certificate {path} is valid for {listed}, not {host}; "
        f"a node given this address could never connect. Sign with a name the certificate "
        f"holds{hint}, or first re-issue the broker certificate with {host} among its names. "
        "Nothing was signed.")


def active_nodes(db: HQDatabase) -> list[str]:
    """Enrolled, unrevoked node ids: the broker lets exactly these in."""
    return [row[0] for row in
            db.execute("SELECT node_id FROM hq_nodes WHERE revoked = 0").fetchall()]


def apply_live(keys: Path, entry: dict[str, Any], commands: list[dict[str, Any]]) -> BrokerOutcome:
    """Send the commands to the broker of one record."""
    try:
        endpoint = AdminEndpoint.of(keys, entry)
        send(endpoint, commands)
    except BrokerUnreachable as exc:
        return BrokerOutcome(str(entry["out"]), "", str(exc))
    return BrokerOutcome(str(entry["out"]), f"{endpoint.host}:{endpoint.port}", "")


def refresh_brokers(keys: Path, db: HQDatabase,
                    commands: list[dict[str, Any]]) -> list[BrokerOutcome]:
    """Change each running broker live, then bring every broker directory up to date (the
    file is written last, so it holds HQ's node list even if the plugin saved its own copy).
    Empty when no broker directory is recorded. Raises BrokerConfigError or OSError when
    the files could not be written."""
    entries = [e for e in recorded_dirs(keys) if (Path(e["out"]) / "mosquitto.conf").exists()]
    outcomes = [apply_live(keys, entry, commands) for entry in entries]
    refresh_broker_dirs(keys, active_nodes(db))
    return outcomes
