"""Broker-level isolation with the generated config: ACLs, revocation, no plaintext on the wire."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from edge_node import __version__
from edge_node.domain import citizens
from edge_node.node import Node
from edge_node.sync_port import NodeOutbox
from sync import topics
from sync.agent import Agent
from sync.hq.worker import Worker
from tests.helpers import wait_for
from tests.sync_env import SyncEnv
from tests.tls_broker import Identity, TLSBroker

pytestmark = pytest.mark.broker  # every test here starts a TLS Mosquitto

CNIC, NAME, PHONE = "35202-1234567-3", "Zainab Bibi", "03001234567"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[TLSBroker]:
    """A started TLS broker."""
    b = TLSBroker(tmp_path / "broker")
    b.start()
    yield b
    b.stop()


class Probe:
    """A raw paho client as some identity, recording what happens."""

    def __init__(self, broker: TLSBroker, ident: Identity) -> None:
        """Connect with the identity's certificate."""
        self.messages: list[tuple[str, bytes]] = []
        self.acks: dict[int, int] = {}
        self.subscribed: set[int] = set()
        self.event = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=ident.name,
                                  protocol=mqtt.MQTTv5)
        self.client.tls_set(ca_certs=str(broker.cafile), certfile=str(ident.certfile),
                            keyfile=str(ident.keyfile))
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload))
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = lambda c, u, mid, codes, p: self.subscribed.add(mid)
        self.client.connect("localhost", broker.port)
        self.client.loop_start()
        wait_for(self.client.is_connected, 10, f"{ident.name} to connect")

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int, reason: object,
                    properties: object) -> None:
        self.acks[mid] = int(getattr(reason, "value", 0))
        self.event.set()

    def publish_code(self, topic: str) -> int:
        """PUBACK reason code of a QoS 1 publish."""
        info = self.client.publish(topic, b"probe", qos=1)
        wait_for(lambda: info.mid in self.acks, 10, "PUBACK")
        return self.acks[info.mid]

    def close(self) -> None:
        """Disconnect."""
        self.client.loop_stop()
        self.client.disconnect()


def test_node_cannot_touch_another_nodes_topics(broker: TLSBroker) -> None:
    """A may not publish as B (0x87) and receives nothing addressed to B."""
    a = Probe(broker, broker.identity("NAAAAA"))
    hq = Probe(broker, broker.identity("hq"))
    try:
        assert a.publish_code(topics.up("NBBBBB")) == 0x87
        assert a.publish_code(topics.status("NBBBBB")) == 0x87
        assert a.publish_code(topics.down("NAAAAA")) == 0x87  # only HQ writes down
        assert a.publish_code(topics.up("NAAAAA")) < 0x80
        mids = {a.client.subscribe(topic, qos=1)[1]
                for topic in (topics.down("NBBBBB"), topics.ack("NBBBBB"), "#")}
        wait_for(lambda: mids <= a.subscribed, 10, "SUBACKs")
        assert hq.publish_code(topics.down("NBBBBB")) < 0x80
        assert hq.publish_code(topics.ack("NBBBBB")) < 0x80
        time.sleep(1.0)
        assert a.messages == []
    finally:
        a.close()
        hq.close()


def test_revoked_node_is_shut_out(broker: TLSBroker) -> None:
    """After revocation the broker refuses the node's certificate; others still connect."""
    a, b = broker.identity("NAAAAA"), broker.identity("NBBBBB")
    broker.revoke(a)
    Probe(broker, b).close()
    with pytest.raises(AssertionError, match="to connect"):
        Probe(broker, a)


def test_broker_admin_sees_no_plaintext(tmp_path: Path, node: Node, hq_url: str) -> None:
    """A subscriber on # with admin rights sees no CNIC, name or phone during a sync."""
    broker = TLSBroker(tmp_path / "broker")
    env = SyncEnv(tmp_path, broker, hq_url)
    broker.start()
    admin = Probe(broker, broker.identity("broker-admin"))
    admin.client.subscribe("#", qos=1)
    actor = {"id": "s1", "role": "receptionist"}
    node.write(lambda db: citizens.register(db, node.keys, cnic=CNIC, name=NAME, phone=PHONE,
                                            id_kind="cnic", actor=actor, now=node.timestamp()))
    identity = env.enroll(node.node_id, Path(node.settings["data_dir"]) / "sync")
    worker = Worker(hq_url, env.hq, "localhost", broker.port)
    worker.start()
    agent = Agent(NodeOutbox(node), identity, __version__)
    agent.start()
    try:
        wait_for(lambda: NodeOutbox(node).stats()["count"] == 0, 60, "sync")
        wait_for(lambda: len(admin.messages) >= 3, 10,  # batch, ack and status were all seen
                 "the admin to see the batch, the ack and the status")
        wire = b"".join(payload for _, payload in admin.messages)
        for secret in (CNIC, CNIC.replace("-", ""), NAME, PHONE, PHONE[1:], "Zainab"):
            assert secret.encode() not in wire, secret
    finally:
        agent.stop()
        worker.stop()
        admin.close()
        broker.stop()
