"""What the sync agent needs from the node's database: the outbox, the acknowledged and
downstream positions, applying what HQ sends, and the restore handshake. The node
implements it (`edge_node/replication/port.py`); `sync` never sees the node's domain."""

from __future__ import annotations

from typing import Any, Protocol


class OutboxPort(Protocol):
    """What the agent needs from the node's database (the node wires it)."""

    def acked_seq(self) -> int:
        """Highest seq HQ has acknowledged (durable)."""

    def pending(self, after_seq: int, limit: int) -> list[dict[str, Any]]:
        """Outbox records with seq > after_seq, oldest first."""

    def mark_acked(self, seq: int) -> None:
        """Durably record HQ's ack and drop delivered records."""

    def stats(self) -> dict[str, Any]:
        """Backlog count, oldest unsent age, bytes pending."""

    def down_seq(self) -> int:
        """Highest downstream seq applied."""

    def apply_down(self, seq: int, kind: str, payload: Any) -> None:
        """Apply one downstream item (idempotent) and record its seq."""

    def refused_down(self) -> list[dict[str, Any]]:
        """Newest refused downstream items ({"seq", "reason", "detail"}), for the down ack."""

    def hlc_now(self) -> str:
        """Current HLC reading, for the status message."""

    def live_summary(self) -> dict[str, Any] | None:
        """The center's live summary (waiting, longest wait, serving, ...; no PII), sent
        inside the status message."""

    def record_link(self, state: str) -> None:
        """Remember the link state ("online"/"offline") for status readers."""

    def record_hq_clock(self, hq_hlc: str) -> None:
        """Remember HQ's clock reading and when it arrived (clock skew check)."""

    def restore_epoch(self) -> int:
        """The node's restore epoch (0: never restored)."""

    def restore_point(self) -> tuple[int, str] | None:
        """(restored_seq, restore_id) of a restore not yet reconciled with HQ, or None."""

    def resume(self, acked_seq: int, resume_seq: int,
               audit_head: tuple[int, str] | None = None) -> None:
        """After a restore: move records made since above `resume_seq`, record HQ's ack,
        and continue the audit chain after HQ's `audit_head` (seq, hash)."""
