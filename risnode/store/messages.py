"""The inbound message log: every message with the ACK it got, keyed by sender and control ID."""
from __future__ import annotations

from risnode.store.db import Tx


def get(tx: Tx, key: str) -> dict | None:
    return tx.get("messages", key)


def put(tx: Tx, key: str, record: dict) -> None:
    tx.put("messages", key, record)


def put_reject(tx: Tx, at: str, record: dict) -> None:
    n = tx.next_counter("rejects")
    tx.put("rejects", f"{at}/{n:010d}", record)

