"""What the RIS tells the PACS over HL7 (``--pacs-hl7``), through the durable outbound queue:
new and changed orders (OMI^O23 with the RIS's accession number and Study Instance UID: IHE
RAD-4/RAD-13), demographics (ADT^A08: RAD-12) and merges (ADT^A40). The PACS checks every
instance it stores against these, so it learns of an order before the modality can send
images for it (the worklist is the same transaction's other reader)."""
from __future__ import annotations

from risnode.hl7 import build
from risnode.records import Order, Patient
from risnode.services import outbound
from risnode.services.context import Context
from risnode.store.db import Tx

ON_ACK = "pacs"


def _enabled(ctx: Context) -> bool:
    return bool(ctx.config.pacs_hl7)


def patient_changed(tx: Tx, patient: Patient, ctx: Context) -> None:
    if _enabled(ctx):
        cfg = ctx.config
        outbound.enqueue(tx, ctx, outbound.PACS, "ADT^A08", "",
                         lambda cid: build.adt_update(patient, cfg.application, cfg.facility, cid, ctx.now), ON_ACK)


def patients_merged(tx: Tx, surviving: Patient, merged_id: str, ctx: Context) -> None:
    if _enabled(ctx):
        cfg = ctx.config
        outbound.enqueue(tx, ctx, outbound.PACS, "ADT^A40", "",
                         lambda cid: build.adt_merge(surviving, merged_id, cfg.application, cfg.facility, cid, ctx.now), ON_ACK)


def order_changed(tx: Tx, order: Order, patient: Patient, control: str, ctx: Context) -> None:
    if _enabled(ctx):
        cfg = ctx.config
        outbound.enqueue(tx, ctx, outbound.PACS, "OMI^O23", order.accession,
                         lambda cid: build.procedure(patient, order, control, cfg.application, cfg.facility, cid, ctx.now), ON_ACK)
