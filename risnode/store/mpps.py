"""MPPS instances: their state and their attributes as DICOM JSON."""
from __future__ import annotations

from risnode.store.db import Tx


def get(tx: Tx, uid: str) -> dict | None:
    return tx.get("mpps", uid)


def put(tx: Tx, uid: str, record: dict) -> None:
    tx.put("mpps", uid, record)
