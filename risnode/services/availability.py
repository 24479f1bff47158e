"""Instance Availability Notification (PS3.4 Annex R) from the PACS: the study is complete.

The PACS sends an IAN N-CREATE once a step's MPPS is COMPLETED and every instance it
references is stored (or, without MPPS, once the study has been stable for a while). The
orders it names (Referenced Request Sequence: accession number; else the Study Instance UID)
record it in their timeline, and under the ``pacs`` completion policy the exam becomes
``exam_complete`` (an order no MPPS has started passes through ``in_progress``).
"""
from __future__ import annotations

import logging

from pydicom import Dataset

from risnode.errors import MppsError
from risnode.records import ARRIVED, EXAM_COMPLETE, IN_PROGRESS, ORDERED, SCHEDULED, Order
from risnode.services import status
from risnode.services.context import Context
from risnode.services.status import CompletionPolicy
from risnode.store import orders as order_store
from risnode.store.db import Tx

LOGGER = logging.getLogger(__name__)

INSTANCE_AVAILABILITY_NOTIFICATION = "1.2.840.10008.5.1.4.33"
DUPLICATE_SOP_INSTANCE = 0x0111
MISSING_ATTRIBUTE = 0x0120
_NOT_STARTED = (ORDERED, SCHEDULED, ARRIVED)


def orders_named(tx: Tx, ds: Dataset) -> list[Order]:
    found: dict[str, Order] = {}
    for item in ds.get("ReferencedRequestSequence", []) or []:
        accession = str(item.get("AccessionNumber", "") or "")
        order = order_store.get(tx, accession) if accession else None
        if order is not None:
            found[order.accession] = order
    if not found:
        study_uid = str(ds.get("StudyInstanceUID", "") or "")
        order = order_store.by_key(tx, f"study/{study_uid}") if study_uid else None
        if order is None and study_uid:
            order = next((o for o in order_store.all_orders(tx) if o.study_uid == study_uid), None)
        if order is not None:
            found[order.accession] = order
    return list(found.values())


def handle(tx: Tx, uid: str, attrs_json: dict, ctx: Context, policy: CompletionPolicy) -> list[str]:
    """Record one IAN; returns the accession numbers of the orders it concerns."""
    ds = Dataset.from_json(attrs_json)
    if not ds.get("StudyInstanceUID") or "ReferencedSeriesSequence" not in ds:
        raise MppsError(MISSING_ATTRIBUTE, "StudyInstanceUID and ReferencedSeriesSequence are required")
    if tx.get("ian", uid) is not None:
        raise MppsError(DUPLICATE_SOP_INSTANCE, "an IAN with this SOP Instance UID exists")
    series = list(ds.ReferencedSeriesSequence)
    instances = sum(len(s.get("ReferencedSOPSequence", []) or []) for s in series)
    mpps = [str(r.ReferencedSOPInstanceUID) for r in ds.get("ReferencedPerformedProcedureStepSequence", []) or []
            if r.get("ReferencedSOPInstanceUID")]
    note = f"{instances} instance(s) in {len(series)} series" + (" (MPPS)" if mpps else " (study stable)")
    orders = orders_named(tx, ds)
    for order in orders:
        order.performed = {**order.performed, "available": {"instances": instances, "series": len(series), "at": ctx.at, "ian": uid}}
        if policy.after_study_available(order) == EXAM_COMPLETE:
            if order.status in _NOT_STARTED:
                status.move(order, IN_PROGRESS, ctx, event="images arrived", note="no MPPS")
            status.move(order, EXAM_COMPLETE, ctx, event="study complete", note=note)
        else:
            status.record(order, "images available", ctx, note)
        order_store.put(tx, order)
    tx.put("ian", uid, {"uid": uid, "received": ctx.at, "source": ctx.source, "study_uid": str(ds.StudyInstanceUID),
                        "orders": [o.accession for o in orders], "dataset": attrs_json})
    if not orders:
        LOGGER.info("IAN %s names no known order", uid)
    return [o.accession for o in orders]
