"""MQTT 5 over TLS with client certificates: one long-lived link with jittered reconnects.

paho keeps its session only in memory and its own reconnect backoff has no
jitter, so this module runs the connect loop itself (full jitter, capped
exponential backoff) and leaves durability to the caller's outbox. Every
callback is guarded: one bad message cannot kill the network loop.
"""

from __future__ import annotations

import functools
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 60.0
KEEPALIVE_S = 30
SESSION_EXPIRY_S = 7 * 24 * 3600
CONNECT_TIMEOUT_S = 10.0
MAX_INFLIGHT = 64
EARLY_PUBACK_KEEP_S = 10.0  # a PUBACK that beat publish() back is claimed within microseconds


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Log and swallow exceptions of a paho callback (Home Assistant's catch_log_exception)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception:
            log.exception("MQTT callback %s failed", fn.__name__)
            return None
    return wrapper


def backoff_s(attempt: int, base: float = BACKOFF_BASE_S, cap: float = BACKOFF_CAP_S) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
    return random.uniform(0, min(cap, base * 2 ** min(attempt, 30)))


@dataclass
class LinkConfig:
    """Where and as whom to connect."""

    client_id: str
    host: str
    port: int
    cafile: str
    certfile: str
    keyfile: str
    subscriptions: list[tuple[str, int]] = field(default_factory=list)
    will: tuple[str, bytes] | None = None
    clean_start: bool = False
    session_expiry_s: int = SESSION_EXPIRY_S


class MqttLink:
    """A reconnecting MQTT v5 client; `on_message(topic, payload)` gets every message."""

    def __init__(self, config: LinkConfig, on_message: Callable[[str, bytes], None],
                 on_connected: Callable[[], None] | None = None,
                 on_disconnected: Callable[[], None] | None = None) -> None:
        """Prepare the paho client (nothing connects until `start`)."""
        self.config = config
        self._on_message = on_message
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._lost = threading.Event()
        self._thread: threading.Thread | None = None
        self.publish_failures = 0
        self._reload = threading.Event()
        self._acks_lock = threading.Lock()
        self._awaiting: dict[int, Callable[[int], None] | None] = {}  # mid -> on_puback
        self._early: dict[int, tuple[int, float]] = {}  # mid -> (reason code, when)
        self.client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        """paho client with TLS, MQTT 5, guarded callbacks and the last will."""
        cfg = self.config
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cfg.client_id,
                             protocol=mqtt.MQTTv5)
        client.tls_set(ca_certs=cfg.cafile, certfile=cfg.certfile, keyfile=cfg.keyfile,
                       cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.max_inflight_messages_set(MAX_INFLIGHT)
        client.max_queued_messages_set(0)
        if cfg.will:
            client.will_set(cfg.will[0], cfg.will[1], qos=1, retain=True)
        client.on_connect = guarded(self._handle_connect)
        client.on_disconnect = guarded(self._handle_disconnect)
        client.on_message = guarded(self._handle_message)
        client.on_publish = guarded(self._handle_publish)
        with self._acks_lock:  # a new client numbers its messages afresh
            self._awaiting.clear()
            self._early.clear()
        return client

    @property
    def connected(self) -> bool:
        """True while a session is up."""
        return self._connected.is_set()

    def start(self) -> None:
        """Run the connect loop in a daemon thread."""
        self._thread = threading.Thread(target=self._run, name=f"mqtt-{self.config.client_id}",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Disconnect cleanly (no last will) and stop the loop."""
        self._stop.set()
        self._lost.set()
        try:
            self.client.disconnect()
        except Exception:  # already down: nothing to close
            log.debug("disconnect while down")
        if self._thread:
            self._thread.join(timeout=10)

    def reload_credentials(self) -> None:
        """Reconnect with the certificate files as they are now (after a renewal)."""
        self._reload.set()
        self._lost.set()
        try:
            self.client.disconnect()
        except Exception:  # already down
            log.debug("disconnect while down")

    def wait_connected(self, timeout: float) -> bool:
        """Block until connected or `timeout` seconds pass."""
        return self._connected.wait(timeout)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False,
                on_puback: Callable[[int], None] | None = None) -> bool:
        """Queue a publish on the live session; False when offline (caller retries later).

        `on_puback(reason_code)` hears the broker's PUBACK of this message (QoS 1), e.g.
        0x10 when no subscriber matched, so nobody received it.
        """
        if not self.connected:
            return False
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return False
        if qos > 0:
            self._await_puback(info.mid, on_puback)
        return True

    def _await_puback(self, mid: int, on_puback: Callable[[int], None] | None) -> None:
        """Remember who waits for `mid`'s PUBACK, or hand over one that already came."""
        with self._acks_lock:
            early = self._early.pop(mid, None)
            if early is None:
                self._awaiting[mid] = on_puback
        if early is not None and on_puback is not None:
            guarded(on_puback)(early[0])

    def _claim_puback(self, mid: int, code: int) -> Callable[[int], None] | None:
        """The waiter of `mid`; a PUBACK faster than publish() returning is kept for it."""
        with self._acks_lock:
            if mid in self._awaiting:
                return self._awaiting.pop(mid)
            now = time.monotonic()
            self._early = {m: v for m, v in self._early.items()
                           if now - v[1] < EARLY_PUBACK_KEEP_S}
            self._early[mid] = (code, now)
            return None

    def _run(self) -> None:
        """Connect, run the network loop until the link drops, back off with jitter, repeat."""
        attempt = 0
        while not self._stop.is_set():
            if self._reload.is_set():
                self._reload.clear()
                self.client = self._make_client()
            try:
                self._lost.clear()
                props = Properties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = self.config.session_expiry_s
                self.client.connect(self.config.host, self.config.port, KEEPALIVE_S,
                                    clean_start=self.config.clean_start, properties=props)
                self.client.loop_start()
                if self._connected.wait(CONNECT_TIMEOUT_S):
                    attempt = 0
                    self._lost.wait()
            except (OSError, ssl.SSLError, ValueError) as exc:
                log.info("MQTT connect to %s:%s failed: %s", self.config.host,
                         self.config.port, type(exc).__name__)
            finally:
                self.client.loop_stop()
                self._connected.clear()
            if not self._stop.is_set():
                self._stop.wait(backoff_s(attempt))
                attempt += 1

    def _handle_connect(self, client: mqtt.Client, userdata: Any, flags: Any,
                        reason: Any, properties: Any) -> None:
        """Subscribe (the broker may keep the session, but be explicit) and signal."""
        if reason.is_failure:
            log.warning("MQTT connection refused: %s", reason)
            self._lost.set()
            return
        for topic, qos in self.config.subscriptions:
            client.subscribe(topic, qos=qos)
        self._connected.set()
        if self._on_connected:
            guarded(self._on_connected)()

    def _handle_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any,
                           reason: Any, properties: Any) -> None:
        """Wake the connect loop."""
        was_connected = self._connected.is_set()
        self._connected.clear()
        self._lost.set()
        if was_connected and self._on_disconnected:
            guarded(self._on_disconnected)()

    def _handle_message(self, client: mqtt.Client, userdata: Any,
                        message: mqtt.MQTTMessage) -> None:
        """Hand the message to the owner."""
        self._on_message(message.topic, bytes(message.payload))

    def _handle_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any,
                        properties: Any) -> None:
        """MQTT 5 PUBACK reason codes >= 0x80 are failures (e.g. 0x87 not authorized).

        The publisher hears every code, 0x10 "no matching subscribers" included.
        """
        if getattr(reason, "is_failure", False):
            self.publish_failures += 1
            log.warning("broker refused a publish: %s", reason)
        code = int(getattr(reason, "value", 0))
        waiter = self._claim_puback(mid, code)
        if waiter is not None:
            waiter(code)
