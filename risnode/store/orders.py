"""Orders by accession number, with their lookup keys and booked slots."""
from __future__ import annotations

from typing import Iterator

from risnode.records import Order
from risnode.store.db import Tx


def get(tx: Tx, accession: str) -> Order | None:
    data = tx.get("orders", accession)
    return Order.from_dict(data) if data else None


def exists(tx: Tx, accession: str) -> bool:
    return tx.get("orders", accession) is not None


def _keys(order: Order) -> list[str]:
    keys = [f"patient/{order.patient_id}/{order.accession}"]
    if order.placer_order:
        keys.append(placer_key(order.placer_app, order.placer_order))
    if order.sps_id:
        keys.append(f"sps/{order.sps_id}")
    if order.study_uid:
        keys.append(f"study/{order.study_uid}")
    return keys


def placer_key(app: str, number: str) -> str:
    return f"placer/{app}/{number}"


def put(tx: Tx, order: Order, previous: Order | None = None) -> None:
    for key in set(_keys(previous) if previous else []) - set(_keys(order)):
        tx.delete("order_keys", key)
    for key in _keys(order):
        tx.put("order_keys", key, order.accession)
    tx.put("orders", order.accession, order.to_dict())


def by_key(tx: Tx, key: str) -> Order | None:
    accession = tx.get("order_keys", key)
    return get(tx, accession) if accession else None


def for_patient(tx: Tx, patient_id: str) -> list[Order]:
    return [o for _, acc in tx.items("order_keys", f"patient/{patient_id}/") if (o := get(tx, acc))]


def all_orders(tx: Tx) -> Iterator[Order]:
    for _, data in tx.items("orders"):
        yield Order.from_dict(data)


# -- slots ----------------------------------------------------------------------------


def book(tx: Tx, modality: str, start: str, accession: str) -> None:
    tx.put("slots", f"{modality}/{start}/{accession}", "")


def release(tx: Tx, modality: str, start: str, accession: str) -> None:
    tx.delete("slots", f"{modality}/{start}/{accession}")


def booked(tx: Tx, modality: str, day: str) -> set[str]:
    """Start times (ISO) booked for ``modality`` on ``day`` (YYYY-MM-DD)."""
    return {key.split("/")[1] for key, _ in tx.items("slots", f"{modality}/{day}")}
