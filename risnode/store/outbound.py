"""The durable outbound queue: messages in creation order per role until acknowledged."""
from __future__ import annotations

from risnode.records import OutboundMessage
from risnode.store.db import Tx


def add(tx: Tx, message: OutboundMessage) -> None:
    tx.put("outbound", f"{message.id:016d}", message.to_dict())
    tx.put("outbound_pending", f"{message.role}/{message.id:016d}", "")


def update(tx: Tx, message: OutboundMessage) -> None:
    tx.put("outbound", f"{message.id:016d}", message.to_dict())
    if message.state != "pending":
        tx.delete("outbound_pending", f"{message.role}/{message.id:016d}")


def get(tx: Tx, message_id: int) -> OutboundMessage | None:
    data = tx.get("outbound", f"{message_id:016d}")
    return OutboundMessage.from_dict(data) if data else None


def head(tx: Tx, role: str) -> OutboundMessage | None:
    """The oldest unacknowledged message for ``role``: nothing after it goes first."""
    for key, _ in tx.items("outbound_pending", f"{role}/"):
        return get(tx, int(key.split("/")[1]))
    return None


def listing(tx: Tx, state: str | None = None) -> list[OutboundMessage]:
    found = (OutboundMessage.from_dict(d) for _, d in tx.items("outbound"))
    return [m for m in found if state is None or m.state == state]


def pending_for(tx: Tx, accession: str, kind: str) -> bool:
    return any(m.accession == accession and m.kind == kind for m in listing(tx, "pending"))
