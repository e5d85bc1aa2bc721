"""Broker-level isolation with the generated config: ACLs, revocation, no plaintext on the wire."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_node import __version__
from edge_node.bootstrap import init_node
from edge_node.config import load_settings
from edge_node.domain import citizens
from edge_node.errors import NotFoundError
from edge_node.node import Node
from edge_node.replication import lookup
from edge_node.replication.port import NodeOutbox
from hq import fleet_keys, lookups
from hq import pii as hq_pii
from hq.store import HQDatabase, utc_now
from hq.worker import Worker
from sync import topics
from sync.agent import Agent
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

    def __init__(self, broker: TLSBroker, ident: Identity, client_id: str | None = None) -> None:
        """Connect with the identity's certificate (and the client id it asks for)."""
        self.messages: list[tuple[str, bytes]] = []
        self.acks: dict[int, int] = {}
        self.subscribed: set[int] = set()
        self.event = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=client_id or ident.name, protocol=mqtt.MQTTv5)
        self.client.tls_set(ca_certs=str(broker.cafile), certfile=str(ident.certfile),
                            keyfile=str(ident.keyfile))
        self.subacks: dict[int, list[int]] = {}
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, bytes(m.payload)))
        self.client.on_publish = self._on_publish
        self.disconnects = 0
        self.client.on_disconnect = lambda *args: setattr(self, "disconnects",
                                                          self.disconnects + 1)
        self.client.on_subscribe = self._on_subscribe
        self.client.connect("localhost", broker.port)
        self.client.loop_start()
        wait_for(self.client.is_connected, 10, f"{ident.name} to connect")

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int, reason: object,
                    properties: object) -> None:
        self.acks[mid] = int(getattr(reason, "value", 0))
        self.event.set()

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int,
                      codes: list[ReasonCode], properties: Properties) -> None:
        self.subacks[mid] = [code.value for code in codes]
        self.subscribed.add(mid)

    def publish_code(self, topic: str) -> int:
        """PUBACK reason code of a QoS 1 publish."""
        info = self.client.publish(topic, b"probe", qos=1)
        wait_for(lambda: info.mid in self.acks, 10, "PUBACK")
        return self.acks[info.mid]

    def subscribe_code(self, topic: str) -> int:
        """SUBACK reason code of a QoS 1 subscription."""
        _, mid = self.client.subscribe(topic, qos=1)
        assert mid is not None, f"subscribe to {topic} was not sent"
        wait_for(lambda: mid in self.subacks, 10, f"SUBACK for {topic}")
        return self.subacks[mid][0]

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


FORBIDDEN = [topics.HQ_UP_SUBSCRIPTION, "#", "+", "+/#", "$SYS/#", "$share/rogue/#",
             f"{topics.ROOT}/#", topics.up("NBBBBB"), topics.down("NBBBBB"),
             topics.ack("NBBBBB"), topics.status("NBBBBB"), f"{topics.ROOT}/node/+/up",
             f"{topics.ROOT}/node/+/down", f"$share/x/{topics.down('NAAAAA')}",
             topics.up("NAAAAA"), f"{topics.ROOT}/node/NAAAAA/#"]


def test_node_subscriptions_are_refused_at_subscribe_time(broker: TLSBroker) -> None:
    """A node gets a failure SUBACK for HQ's group and every topic but its own down/ack and
    the broadcast; HQ still receives every message of the other node while it keeps trying."""
    rogue = Probe(broker, broker.identity("NAAAAA"))
    b = Probe(broker, broker.identity("NBBBBB"))
    hq = Probe(broker, broker.identity("hq"))
    try:
        assert hq.subscribe_code(topics.HQ_UP_SUBSCRIPTION) < 0x80
        for topic in FORBIDDEN:
            assert rogue.subscribe_code(topic) >= 0x80, topic
        for topic in (topics.down("NAAAAA"), topics.ack("NAAAAA"), topics.BROADCAST_DOWN):
            assert rogue.subscribe_code(topic) < 0x80, topic
        sent = 60
        for i in range(sent):
            assert rogue.subscribe_code(FORBIDDEN[i % len(FORBIDDEN)]) >= 0x80
            assert b.publish_code(topics.up("NBBBBB")) < 0x80
        wait_for(lambda: len(hq.messages) >= sent, 10, "HQ to receive every message")
        time.sleep(0.5)
        assert len(hq.messages) == sent
        assert rogue.messages == []
    finally:
        for probe in (rogue, b, hq):
            probe.close()


def test_node_cannot_take_over_another_nodes_client_id(broker: TLSBroker) -> None:
    """A asks for B's client id: the broker gives A its own (the CN); B stays connected
    and still gets what HQ sends it."""
    b = Probe(broker, broker.identity("NBBBBB"))
    hq = Probe(broker, broker.identity("hq"))
    rogues = []
    try:
        assert b.subscribe_code(topics.down("NBBBBB")) < 0x80
        ident = broker.identity("NAAAAA")
        for _ in range(3):
            rogues.append(Probe(broker, ident, client_id="NBBBBB"))
        time.sleep(1.0)
        assert b.disconnects == 0 and b.client.is_connected()
        assert hq.publish_code(topics.down("NBBBBB")) < 0x80
        wait_for(lambda: len(b.messages) == 1, 10, "B to receive its down message")
    finally:
        for probe in (*rogues, b, hq):
            probe.close()


def test_revoked_node_is_shut_out(broker: TLSBroker) -> None:
    """After revocation the broker refuses the node's certificate; others still connect."""
    a, b = broker.identity("NAAAAA"), broker.identity("NBBBBB")
    broker.revoke(a)
    Probe(broker, b).close()
    with pytest.raises(AssertionError, match="to connect"):
        Probe(broker, a)


def test_wiretap_sees_no_plaintext(tmp_path: Path, node: Node, hq_url: str) -> None:
    """A test-only subscriber allowed to read # sees no CNIC, name or phone during a sync,
    nor during a citizen lookup: a second node asks HQ for the CNIC it does not hold and
    gets the citizen back (request by fleet index, answer sealed to that node)."""
    broker = TLSBroker(tmp_path / "broker")
    env = SyncEnv(tmp_path, broker, hq_url)
    broker.start()
    admin = Probe(broker, broker.identity("wiretap"))
    admin.client.subscribe("#", qos=1)
    actor = {"id": "s1", "role": "receptionist"}
    node.write(lambda db: citizens.register(db, node.keys, cnic=CNIC, name=NAME, phone=PHONE,
                                            id_kind="cnic", actor=actor, now=node.timestamp()))
    settings = load_settings(str(tmp_path / "asker"), environ={})
    init_node(settings, "LHR-01")
    asker = Node(settings)
    identity = env.enroll(node.node_id, Path(node.settings["data_dir"]) / "sync")
    asker_identity = env.enroll(asker.node_id, tmp_path / "asker" / "sync", asker.center_id)
    db = HQDatabase(hq_url)
    fleet_keys.distribute(db)  # the fleet index key goes down sealed; the node re-indexes
    fleet = hq_pii.current_fleet(db)
    db.close()
    assert fleet is not None
    worker = Worker(hq_url, env.hq, "localhost", broker.hq_port)
    worker.start()
    agent = Agent(NodeOutbox(node), identity, __version__)
    agent.start()
    asker_agent = Agent(NodeOutbox(asker), asker_identity, __version__)
    asker_agent.start()
    try:
        wait_for(lambda: bool(node.keys.fleet), 60, "the fleet key to reach the node")
        wait_for(lambda: bool(asker.keys.fleet), 60, "the fleet key to reach the asker")
        wait_for(lambda: NodeOutbox(node).stats()["count"] == 0, 60, "sync")
        wait_for(lambda: len(admin.messages) >= 5, 10,  # batches, acks, down and status
                 "the admin to see the batches, acks, the downstream and the status")
        with pytest.raises(NotFoundError):
            citizens.lookup(asker.reader(), asker.keys, CNIC)
        before = len(admin.messages)
        outcome, found = lookup.ask_hq(asker, asker_agent, CNIC, "reception-asker")
        assert outcome == "found" and found is not None and found["name"] == NAME
        wait_for(lambda: len(admin.messages) >= before + 2, 10,  # the request and the answer
                 "the admin to see the lookup request and its answer")
        wire = b"".join(payload for _, payload in admin.messages)
        for secret in (CNIC, CNIC.replace("-", ""), NAME, PHONE, PHONE[1:], "Zainab",
                       "+92" + PHONE[1:], fleet[1].hex(), fleet[1]):
            assert (secret if isinstance(secret, bytes) else secret.encode()) not in wire
        db = HQDatabase(hq_url)
        try:  # what crossed the wire sealed reached HQ whole, under HQ's key
            seen = hq_pii.read_citizen(db, "auditor", "wiretap test", cnic=CNIC,
                                       now=utc_now())
            assert (seen["name"], seen["phone"]) == (NAME, "+92" + PHONE[1:])
            assert [r["outcome"] for r in lookups.lookups(db)] == ["found"]
        finally:
            db.close()
    finally:
        asker_agent.stop()
        agent.stop()
        worker.stop()
        admin.close()
        broker.stop()
        asker.close()


def test_link_hears_no_matching_subscribers(broker: TLSBroker) -> None:
    """MqttLink hands each QoS 1 publish its PUBACK code: 0x10 while HQ is not subscribed."""
    from sync.transport import LinkConfig, MqttLink

    ident = broker.identity("NAAAAA")
    link = MqttLink(LinkConfig("NAAAAA", "localhost", broker.port, str(broker.cafile),
                               str(ident.certfile), str(ident.keyfile)), lambda t, p: None)
    link.start()
    codes: list[int] = []
    try:
        assert link.wait_connected(10)
        assert link.publish(topics.up("NAAAAA"), b"x", qos=1, on_puback=codes.append)
        wait_for(lambda: len(codes) == 1, 10, "the PUBACK with no subscriber")
        hq = Probe(broker, broker.identity("hq"))
        hq.client.subscribe(topics.HQ_UP_SUBSCRIPTION, qos=1)
        time.sleep(0.5)
        for _ in range(20):  # many: some PUBACKs may beat publish() back
            assert link.publish(topics.up("NAAAAA"), b"x", qos=1, on_puback=codes.append)
        wait_for(lambda: len(codes) == 21, 10, "the PUBACKs with HQ subscribed")
        hq.close()
        assert codes == [0x10] + [0] * 20
        assert not link._awaiting and not link._early  # every PUBACK reached its publisher
    finally:
        link.stop()
