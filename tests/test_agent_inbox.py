"""paho's network thread only hands messages over: applying downstream items (a writer
round trip each, slow on an SD card) runs on the agent's thread, so PUBACKs, acks and
keepalive pings are never held up behind the database."""

from __future__ import annotations

import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

from edge_node import __version__
from edge_node.node import Node
from edge_node.replication.port import NodeOutbox
from hq.downstream import enqueue, pending_envelope
from hq.store import HQDatabase
from sync import topics
from sync.agent import Agent
from tests.helpers import wait_for
from tests.sync_env import SyncEnv
from tests.tls_broker import TLSBroker

SLOW_APPLY_S = 0.3  # one item's write on a slow card


class SlowDisk(NodeOutbox):
    """The node's real port, with each downstream item taking SLOW_APPLY_S to land."""

    def __init__(self, node: Node) -> None:
        """Remember which threads applied items."""
        super().__init__(node)
        self.threads: set[str] = set()

    def apply_down(self, seq: int, kind: str, payload: Any) -> None:
        """Apply as usual, slowly."""
        self.threads.add(threading.current_thread().name)
        time.sleep(SLOW_APPLY_S)
        super().apply_down(seq, kind, payload)


def test_downstream_is_applied_off_the_network_thread(tmp_path: Path, node: Node) -> None:
    env = SyncEnv(tmp_path, TLSBroker(tmp_path / "broker"), str(tmp_path / "hq.db"))
    identity = env.enroll(node.node_id, Path(node.settings["data_dir"]) / "sync")
    with closing(HQDatabase(env.hq_url)) as hq:
        for n in range(5):
            enqueue(hq, "revocation", {"node_id": f"GONE{n}"}, node.node_id)
        payload = pending_envelope(hq, node.node_id, env.hq.sign_key)
    assert payload is not None
    port = SlowDisk(node)
    agent = Agent(port, identity, __version__)
    network = threading.Thread(target=agent._on_message, name="paho-mqtt-client-test",
                               args=(topics.down(node.node_id), payload))
    started = time.monotonic()
    network.start()
    network.join()
    assert time.monotonic() - started < SLOW_APPLY_S  # handed over, nothing applied yet
    assert port.down_seq() == 0
    agent.start()  # the link has no broker to reach: the agent thread still drains
    try:
        wait_for(lambda: port.down_seq() == 5, 10, "the agent thread to apply all five")
    finally:
        agent.stop()
    assert port.threads == {"sync-agent"}
