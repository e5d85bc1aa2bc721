"""Change the running broker's access control live, through the dynamic-security plugin.

`edge-hq node sign` and `edge-hq node revoke` send the plugin's commands
(createRole/createClient, deleteClient/deleteRole) to
`$CONTROL/dynamic-security/v1` and wait for its answer on
`$CONTROL/dynamic-security/v1/response`, as the `broker-admin` identity, on
HQ's listener. No restart: other clients stay connected. Deleting a client
disconnects it at once (the broker answers only after that), so a revoked
node is off the broker when `node revoke` returns.

The broker is authenticated by its certificate: it must chain to HQ's CA and be
exactly the broker certificate of HQ's key directory (pinned; HQ's listener is
usually reached at an address, such as 127.0.0.1, that the certificate does not name).
"""

from __future__ import annotations

import json
import os
import ssl
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from paho.mqtt.enums import CallbackAPIVersion

from certs.broker import ADMIN_USER, CONTROL_RESPONSE, CONTROL_TOPIC
from certs.layout import CA_CERT

REPLY_TIMEOUT_S = 10.0  # the guide promises the node is refused within this
# Answers that mean "already as wanted": a repeated sign, a node revoked twice.
HARMLESS = ("already exists", "not found")


class BrokerUnreachable(RuntimeError):
    """The running broker could not be changed (down, refused us, or did not answer)."""


@dataclass(frozen=True)
class AdminEndpoint:
    """Where and as whom to reach a broker's control topic."""

    host: str
    port: int
    keys: Path  # HQ's key directory: ca.pem, broker.pem (pinned), broker-admin.pem/.key

    @classmethod
    def of(cls, keys: Path, entry: dict[str, Any]) -> AdminEndpoint:
        """The HQ listener a `broker-config` record names (a wildcard bind: loopback)."""
        port = entry.get("hq_port")
        if not isinstance(port, int):
            raise BrokerUnreachable(f"{entry.get('out')}: written by an older broker-config "
                                    "with no HQ listener recorded; rerun `edge-hq broker-config`")
        bind = str(entry.get("hq_bind") or "127.0.0.1")
        host = "127.0.0.1" if bind in ("0.0.0.0", "::", "") else bind  # noqa: S104
        return cls(host, port, keys)


def _context(keys: Path) -> ssl.SSLContext:
    """TLS as broker-admin, trusting only HQ's CA; the name check is replaced by the pin."""
    for name in (f"{ADMIN_USER}.pem", f"{ADMIN_USER}.key"):
        if not (keys / name).exists():
            raise BrokerUnreachable(f"{keys / name} missing; run `edge-hq broker-config` "
                                    "(it issues the broker-admin certificate)")
    context = ssl.create_default_context(cafile=str(keys / CA_CERT))
    context.check_hostname = False
    context.load_cert_chain(str(keys / f"{ADMIN_USER}.pem"), str(keys / f"{ADMIN_USER}.key"))
    return context


def _pinned(keys: Path) -> bytes:
    """DER of the broker certificate in HQ's key directory."""
    cert = x509.load_pem_x509_certificate((keys / "broker.pem").read_bytes())
    return cert.public_bytes(serialization.Encoding.DER)


def _check(command: dict[str, Any], answer: dict[str, Any] | None) -> None:
    """Raise unless the plugin did (or had already done) what was asked."""
    if answer is None:
        raise BrokerUnreachable(f"the broker did not answer {command['command']}")
    error = answer.get("error")
    if error and not any(text in str(error).lower() for text in HARMLESS):
        raise BrokerUnreachable(f"the broker refused {command['command']}: {error}")


def send(endpoint: AdminEndpoint, commands: list[dict[str, Any]],
         timeout: float = REPLY_TIMEOUT_S) -> None:
    """Send dynamic-security commands and wait until the plugin has answered every one."""
    tagged = {uuid.uuid4().hex: command for command in commands}
    answers: dict[str, dict[str, Any]] = {}
    failure: list[str] = []
    done = threading.Event()
    pin = _pinned(endpoint.keys)
    client = mqtt.Client(CallbackAPIVersion.VERSION2,
                         client_id=f"{ADMIN_USER}-{os.getpid()}", protocol=mqtt.MQTTv5)
    client.tls_set_context(_context(endpoint.keys))

    def on_connect(c: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        sock = c.socket()
        peer = sock.getpeercert(binary_form=True) if isinstance(sock, ssl.SSLSocket) else None
        if reason.is_failure or peer != pin:
            failure.append(f"connection refused ({reason})" if reason.is_failure else
                           "the broker's certificate is not HQ's broker.pem")
            done.set()
            return
        c.subscribe(CONTROL_RESPONSE, qos=1)

    def on_subscribe(c: mqtt.Client, userdata: Any, mid: int, codes: Any, props: Any) -> None:
        if any(code.is_failure for code in codes):
            failure.append(f"not allowed to read {CONTROL_RESPONSE} (is this HQ's broker?)")
            done.set()
            return
        c.publish(CONTROL_TOPIC, json.dumps({"commands": [
            {**command, "correlationData": tag} for tag, command in tagged.items()]}), qos=1)

    def on_message(c: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            responses = json.loads(message.payload).get("responses", [])
        except (ValueError, AttributeError):
            return
        for response in responses:
            if isinstance(response, dict) and response.get("correlationData") in tagged:
                answers[response["correlationData"]] = response
        if len(answers) == len(tagged):
            done.set()

    client.on_connect, client.on_subscribe, client.on_message = (on_connect, on_subscribe,
                                                                 on_message)
    try:
        client.connect(endpoint.host, endpoint.port)
    except (OSError, ssl.SSLError) as exc:
        raise BrokerUnreachable(f"cannot reach the broker at {endpoint.host}:{endpoint.port}: "
                                f"{exc}") from exc
    client.loop_start()
    try:
        if not done.wait(timeout):
            raise BrokerUnreachable(f"no answer from the broker at {endpoint.host}:"
                                    f"{endpoint.port} within {timeout:.0f} s")
        if failure:
            raise BrokerUnreachable(f"broker at {endpoint.host}:{endpoint.port}: {failure[0]}")
        for tag, command in tagged.items():
            _check(command, answers.get(tag))
    finally:
        client.disconnect()
        client.loop_stop()
