"""Mosquitto configuration for the fleet: TLS listener, client certificates, CRL, access control.

Node identity is the certificate CN, used as the MQTT username
(`use_identity_as_username`). Access control is Mosquitto's
dynamic-security plugin, which — unlike an `acl_file` — checks subscriptions
when they are made: a node's SUBSCRIBE to anything but its own `down`, its own
`ack` and the broadcast gets a failure reason code (0x87), so it can never
join HQ's shared group or any other node's topics. The plugin has no `%u`
patterns, so each enrolled node has its own client and role. Enrollment and
revocation change them live through the plugin's control topic (see
`certs.broker_control`, as the `broker-admin` identity) and rewrite the file,
so a restarted broker starts from the same state.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from certs.files import write_atomic
from certs.layout import CA_CERT, CRL

TOPIC_ROOT = "khidmat/v1"
HQ_USER = "hq"
ADMIN_USER = "broker-admin"  # HQ's CLI: may only talk to the dynamic-security control topic
CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
CONTROL_RESPONSE = f"{CONTROL_TOPIC}/response"
# HQ's own certificate names (and the broker's): never a node id.
# A node id is a certificate name, an MQTT client id and a topic level: no wildcard, no slash.
NODE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
RESERVED_IDS = frozenset({HQ_USER, "hq-sign", "broker", ADMIN_USER})
SHARE_GROUP = "hq"
DYNSEC_PLUGIN_GLOBS = ("/usr/lib/*/mosquitto_dynamic_security.so",
                       "/usr/lib/mosquitto_dynamic_security.so",
                       "/usr/local/lib/mosquitto_dynamic_security.so",
                       "/usr/lib64/mosquitto_dynamic_security.so")


class BrokerConfigError(RuntimeError):
    """The broker cannot be configured as asked (plugin missing, reserved name)."""


@dataclass(frozen=True)
class BrokerPaths:
    """Files the generated config points at."""

    cafile: Path
    certfile: Path
    keyfile: Path
    crlfile: Path
    dynsec_file: Path
    persistence_dir: Path | None = None


def find_dynsec_plugin() -> Path:
    """The dynamic-security plugin shipped with Mosquitto 2.x, or BrokerConfigError."""
    for pattern in DYNSEC_PLUGIN_GLOBS:
        found = sorted(glob.glob(pattern))
        if found:
            return Path(found[0])
    raise BrokerConfigError("mosquitto_dynamic_security.so not found: install Mosquitto 2.x "
                            "(Debian: apt-get install mosquitto)")


def _acl(acltype: str, topic: str) -> dict[str, Any]:
    """One allowing dynamic-security ACL entry."""
    return {"acltype": acltype, "topic": topic, "allow": True, "priority": 0}


def node_role(node_id: str, root: str = TOPIC_ROOT) -> dict[str, Any]:
    """What one node may do: write its own up/status, subscribe to and receive its own
    ack/down and the broadcast. Nothing else, not even wildcards over its own topics."""
    mine = f"{root}/node/{node_id}"
    readable = [f"{mine}/ack", f"{mine}/down", f"{root}/broadcast/down"]
    return {"rolename": f"node-{node_id}", "acls": [
        _acl("publishClientSend", f"{mine}/up"), _acl("publishClientSend", f"{mine}/status"),
        *[_acl("subscribeLiteral", topic) for topic in readable],
        *[_acl("publishClientReceive", topic) for topic in readable],
    ]}


def hq_role(root: str = TOPIC_ROOT) -> dict[str, Any]:
    """HQ's ingest workers: the shared group on every node's up, status, and write down/ack."""
    return {"rolename": "hq", "acls": [
        _acl("subscribeLiteral", f"$share/{SHARE_GROUP}/{root}/node/+/up"),
        _acl("subscribeLiteral", f"{root}/node/+/status"),
        _acl("publishClientReceive", f"{root}/node/+/up"),
        _acl("publishClientReceive", f"{root}/node/+/status"),
        _acl("publishClientSend", f"{root}/node/+/ack"),
        _acl("publishClientSend", f"{root}/node/+/down"),
        _acl("publishClientSend", f"{root}/broadcast/down"),
    ]}


def admin_role() -> dict[str, Any]:
    """`broker-admin`: send dynamic-security commands and read their answers. Nothing else —
    no fleet topic — though the commands themselves can change anyone's access."""
    return {"rolename": ADMIN_USER, "acls": [
        _acl("publishClientSend", CONTROL_TOPIC),
        _acl("subscribeLiteral", CONTROL_RESPONSE),
        _acl("publishClientReceive", CONTROL_RESPONSE),
    ]}


def add_node_commands(node_id: str) -> list[dict[str, Any]]:
    """Control commands that let one node in, as `dynsec_config` would list it."""
    return [{"command": "createRole", **node_role(node_id)},
            {"command": "createClient", "username": node_id, "textname": "enrolled node",
             "roles": [{"rolename": f"node-{node_id}"}]}]


def remove_node_commands(node_id: str) -> list[dict[str, Any]]:
    """Control commands that shut one node out: deleting the client disconnects it at once,
    and without client or role every later publish and subscription of it is refused."""
    return [{"command": "deleteClient", "username": node_id},
            {"command": "deleteRole", "rolename": f"node-{node_id}"}]


def dynsec_config(node_ids: Iterable[str], root: str = TOPIC_ROOT) -> dict[str, Any]:
    """The dynamic-security file: HQ, broker-admin, and one client and role per node.

    Everything not granted is refused (publish, receive and subscribe default to
    deny). Clients have no password: they authenticate by certificate only.
    """
    nodes = sorted(set(node_ids))
    reserved = sorted(RESERVED_IDS.intersection(nodes))
    if reserved:
        raise BrokerConfigError(f"node id {reserved[0]!r} is reserved for HQ")
    clients = [{"username": HQ_USER, "textname": "HQ ingest and downstream",
                "roles": [{"rolename": "hq"}]},
               {"username": ADMIN_USER, "textname": "HQ CLI: node sign and revoke, live",
                "roles": [{"rolename": ADMIN_USER}]}]
    clients += [{"username": node, "textname": "enrolled node",
                 "roles": [{"rolename": f"node-{node}"}]} for node in nodes]
    return {
        "defaultACLAccess": {"publishClientSend": False, "publishClientReceive": False,
                             "subscribe": False, "unsubscribe": True},
        "clients": clients, "groups": [],
        "roles": [hq_role(root), admin_role(), *[node_role(node, root) for node in nodes]],
    }


def dynsec_json(node_ids: Iterable[str]) -> bytes:
    """The dynamic-security file's bytes."""
    return (json.dumps(dynsec_config(node_ids), indent=2) + "\n").encode()


def _tls_listener(paths: BrokerPaths, port: int, bind: str) -> list[str]:
    """A TLS listener that demands a client certificate from the device CA."""
    return [
        "",
        f"listener {port} {bind}",
        "protocol mqtt",
        f"cafile {paths.cafile}",
        f"certfile {paths.certfile}",
        f"keyfile {paths.keyfile}",
        f"crlfile {paths.crlfile}",
        "require_certificate true",
        "use_identity_as_username true",
        "tls_version tlsv1.2",
    ]


def mosquitto_conf(paths: BrokerPaths, port: int, bind: str = "0.0.0.0",  # noqa: S104
                   log_dest: str = "stderr", run_as: str = "mosquitto",
                   plugin: Path | None = None, hq_port: int | None = None,
                   hq_bind: str = "127.0.0.1") -> str:
    """A mosquitto.conf: the nodes' TLS listener and, with `hq_port`, HQ's own listener.

    On the nodes' listener the client id is the certificate CN
    (`use_username_as_clientid`), whatever the client asks for, so a node can
    never take over another node's session. HQ's workers share one certificate
    and need distinct client ids, so they connect to a second listener bound to
    `hq_bind` (loopback by default: nodes cannot reach it).
    `run_as` is the account mosquitto switches to when started as root; it must
    be able to read every file named here and write the persistence directory.
    """
    lines = [
        "# Generated by edge-hq broker-config.",
        f"user {run_as}",
        "per_listener_settings false",
        "allow_anonymous false",
        f"plugin {plugin or find_dynsec_plugin()}",
        f"plugin_opt_config_file {paths.dynsec_file}",
        "max_inflight_messages 100",
        "max_queued_messages 100000",
        "max_packet_size 2200000",
        "persistent_client_expiration 45d",
        f"log_dest {log_dest}",
        "log_type error",
        "log_type warning",
        "log_type notice",
        *_tls_listener(paths, port, bind),
        "use_username_as_clientid true",
    ]
    if hq_port is not None:
        lines += _tls_listener(paths, hq_port, hq_bind)
    if paths.persistence_dir is not None:
        lines[2:2] = ["persistence true", f"persistence_location {paths.persistence_dir}/"]
    return "\n".join(lines) + "\n"


RECORD = "broker-dirs.json"  # in the key directory: where broker-config wrote its files


@dataclass(frozen=True)
class Owner:
    """Who the broker runs as: files get this group (and the persistence dir this owner)."""

    user: str
    uid: int
    gid: int

    @classmethod
    def of(cls, user: str) -> Owner:
        """Look the account up; refuse one we could not hand files to."""
        try:
            entry = pwd.getpwnam(user)
        except KeyError as exc:
            raise BrokerConfigError(f"no such user {user!r} (--run-as)") from exc
        if os.geteuid() != 0 and entry.pw_uid != os.geteuid():
            raise BrokerConfigError(f"only root can hand broker files to {user!r}; run as root "
                                    "or pass --run-as with your own user")
        return cls(user, entry.pw_uid, entry.pw_gid)


def _install(path: Path, data: bytes, mode: int, owner: Owner, group_only: bool = True) -> None:
    """Write a file atomically: root (or us) owns it, the broker's group reads it."""
    ids = (0 if group_only else owner.uid, owner.gid) if os.geteuid() == 0 else None
    write_atomic(path, data, mode, ids)


def _directory(path: Path, mode: int, owner: Owner, own: bool = False) -> None:
    """A directory the broker can enter (and, with own=True, write)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        os.chown(path, owner.uid if own else 0, owner.gid)
    os.chmod(path, mode)


def write_broker_dir(keys: Path, out: Path, owner: Owner, port: int, bind: str,
                     node_ids: Iterable[str], hq_port: int | None = None,
                     hq_bind: str = "127.0.0.1") -> BrokerPaths:
    """Lay out everything Mosquitto reads, readable by its group only, outside the 0700 key
    directory: copies of the CA and broker certificates, the broker key (0640), the CRL,
    the dynamic-security file, the config, and a persistence directory it owns (0700)."""
    _directory(out, 0o750, owner)
    paths = BrokerPaths(out / CA_CERT, out / "broker.pem", out / "broker.key", out / CRL,
                        out / "dynamic-security.json", out / "persist")
    for name in (CA_CERT, "broker.pem", CRL):
        _install(out / name, (keys / name).read_bytes(), 0o644, owner)
    _install(paths.keyfile, (keys / "broker.key").read_bytes(), 0o640, owner)
    _install(paths.dynsec_file, dynsec_json(node_ids), 0o640, owner)
    _install(out / "mosquitto.conf",
             mosquitto_conf(paths, port, bind, run_as=owner.user, hq_port=hq_port,
                            hq_bind=hq_bind).encode(), 0o640, owner)
    assert paths.persistence_dir is not None
    _directory(paths.persistence_dir, 0o700, owner, own=True)
    _remember(keys, {"out": str(out), "run_as": owner.user, "hq_port": hq_port,
                     "hq_bind": hq_bind})
    return paths


def _remember(keys: Path, entry: dict[str, Any]) -> None:
    """Record the broker directory (and HQ's listener, where `node sign` and `node revoke`
    reach the running broker) so enrollment and revocation keep it current."""
    dirs = {d["out"]: d for d in recorded_dirs(keys)}
    dirs[entry["out"]] = entry
    data = json.dumps({"dirs": sorted(dirs.values(), key=lambda d: d["out"])}, indent=2)
    write_atomic(keys / RECORD, data.encode())


def recorded_dirs(keys: Path) -> list[dict[str, Any]]:
    """Broker directories written from this key directory."""
    path = keys / RECORD
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    return [d for d in data.get("dirs", []) if isinstance(d, dict)]


def refresh_broker_dirs(keys: Path, node_ids: Iterable[str]) -> list[dict[str, Any]]:
    """After enrollment or revocation: copy the CRL and rewrite the dynamic-security file in
    every recorded broker directory, so a restarted broker starts from the same state (the
    running one is changed live, `certs.broker_control`). Returns the refreshed records."""
    nodes = list(node_ids)
    refreshed = []
    for entry in recorded_dirs(keys):
        out = Path(entry["out"])
        if not (out / "mosquitto.conf").exists():
            continue
        owner = Owner.of(entry["run_as"])
        _install(out / CRL, (keys / CRL).read_bytes(), 0o644, owner)
        _install(out / "dynamic-security.json", dynsec_json(nodes), 0o640, owner)
        refreshed.append(entry)
    return refreshed
