"""Orders in: ORM^O01 (v2.3 style: ORC/OBR, DG1, ZDS) and OMI^O23 (v2.5: TQ1, IPC).

The RIS is the order filler: a new order (NW) gets an accession number, a Requested
Procedure ID, a Scheduled Procedure Step ID, a Study Instance UID and a slot, unless the
message carries them. CA cancels, DC discontinues, XO changes, SC reports a status.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from pydicom.uid import generate_uid

from pacsnode.dicom.uids import UID_ROOT
from risnode.errors import (
    APPLICATION_INTERNAL_ERROR,
    DATA_TYPE_ERROR,
    DUPLICATE_KEY_IDENTIFIER,
    SEGMENT_SEQUENCE_ERROR,
    TABLE_VALUE_NOT_FOUND,
    Conflict,
    Hl7Error,
    RisError,
)
from risnode.hl7.datatypes import PRIORITIES, parse_dtm, xcn_to_pn
from risnode.hl7.message import Hl7Message, Segment
from risnode.records import (
    ARRIVED,
    CANCELLED,
    DISCONTINUED,
    EXAM_COMPLETE,
    IN_PROGRESS,
    ORDERED,
    SCHEDULED,
    Order,
    Patient,
)
from risnode.services import adt, pacs_feed, status
from risnode.services.accession import next_accession
from risnode.services.context import Context
from risnode.services.scheduling import next_free_slot
from risnode.store import orders as order_store
from risnode.store import patients as patient_store
from risnode.store.db import Tx

RIS_UID_ROOT = UID_ROOT + "2."
CPT_SCHEMES = {"C4", "C5", "CPT", "CPT4", "CPT-4"}
# ORC-5 order status (HL7 table 0038) -> our status, for SC messages.
ORDER_STATUS = {"SC": SCHEDULED, "IP": IN_PROGRESS, "CM": EXAM_COMPLETE, "CA": CANCELLED, "DC": DISCONTINUED}
CHANGEABLE = (ORDERED, SCHEDULED, ARRIVED)
# Fields an XO may change (the identifiers stay).
_CHANGEABLE_FIELDS = ("procedure", "cpt", "protocol", "diagnoses", "priority", "reason", "ordering_provider", "referring_physician")
NO_INSURANCE = "no_insurance"


@dataclass
class OrderGroup:
    orc: Segment
    obr: Segment | None = None
    tq1: Segment | None = None
    ipc: Segment | None = None
    zds: Segment | None = None
    dg1: list[Segment] = field(default_factory=list)


def groups(msg: Hl7Message) -> tuple[list[OrderGroup], list[Segment]]:
    """The ORC groups, and DG1 segments that precede every ORC (they apply to all)."""
    found: list[OrderGroup] = []
    leading_dg1: list[Segment] = []
    for seg in msg.segments:
        if seg.name == "ORC":
            found.append(OrderGroup(seg))
        elif not found:
            if seg.name == "DG1":
                leading_dg1.append(seg)
            elif seg.name in ("OBR", "TQ1", "IPC"):
                raise Hl7Error(f"{seg.name} before any ORC", seg.name, SEGMENT_SEQUENCE_ERROR)
        elif seg.name == "OBR":
            if found[-1].obr is not None:
                raise Hl7Error("a second OBR in one ORC group", "OBR", SEGMENT_SEQUENCE_ERROR)
            found[-1].obr = seg
        elif seg.name in ("TQ1", "IPC") and getattr(found[-1], seg.name.lower()) is None:
            setattr(found[-1], seg.name.lower(), seg)
        elif seg.name == "ZDS":
            found[-1].zds = seg
        elif seg.name == "DG1":
            found[-1].dg1.append(seg)
    if not found:
        raise Hl7Error.missing("ORC", "common order segment")
    return found, leading_dg1


def receive(tx: Tx, msg: Hl7Message, ctx: Context) -> None:
    pid = msg.first("PID")
    if pid is None:
        raise Hl7Error.missing("PID", "patient identification segment")
    pid_value, _ = adt.patient_id(pid)
    patient = patient_store.resolve(tx, pid_value)
    if patient is None:
        raise Hl7Error.unknown("PID-3", f"patient {pid_value}: register it with ADT A01/A04 first")
    plans = adt.insurance(msg)
    if plans:
        patient.insurance = plans
        patient_store.put(tx, patient)
    found, leading_dg1 = groups(msg)
    for group in found:
        control = group.orc.require(1, "order control").upper()
        handler = _CONTROLS.get(control)
        if handler is None:
            raise Hl7Error(f"ORC-1 {control!r}: use NW, CA, XO, SC or DC", "ORC-1", TABLE_VALUE_NOT_FOUND)
        try:
            handler(tx, msg, group, leading_dg1, patient, ctx)
        except Conflict as exc:
            raise Hl7Error(str(exc), "ORC-1", APPLICATION_INTERNAL_ERROR) from exc


def _coded(components: list[str]) -> dict:
    c = (components + ["", "", ""])[:3]
    return {"code": c[0], "meaning": c[1], "scheme": c[2]} if c[0] or c[1] else {}


def _timing(group: OrderGroup) -> list[tuple[str, str, str]]:
    """(location, start, priority) candidates in order of precedence."""
    found = []
    if group.tq1:
        found.append(("TQ1-7", group.tq1.get(7), group.tq1.get(9)))
    found.append(("ORC-7.4", group.orc.get(7, 4), group.orc.get(7, 6)))
    if group.obr:
        found.append(("OBR-27.4", group.obr.get(27, 4), group.obr.get(27, 6)))
        found.append(("OBR-36", group.obr.get(36), group.obr.get(5)))
    return found


def details(msg: Hl7Message, group: OrderGroup, leading_dg1: list[Segment]) -> dict:
    """What the group says about the order; keys are absent when the message is silent."""
    obr, ipc = group.obr, group.ipc
    found: dict = {}
    start = next(((loc, value) for loc, value, _ in _timing(group) if value), None)
    if start:
        when = parse_dtm(start[1])
        if when is None:
            raise Hl7Error(f"{start[0]} {start[1]!r} is not a date/time (YYYYMMDDHHMM)", start[0], DATA_TYPE_ERROR)
        found["scheduled"] = when
    priority = next((p for _, _, p in _timing(group) if p), "")
    if priority:
        found["priority"] = PRIORITIES.get(priority.upper()[:1], "ROUTINE")
    diagnoses = [_coded(d.components(3)) for d in (group.dg1 or leading_dg1)]
    if any(diagnoses):
        found["diagnoses"] = [d for d in diagnoses if d]
    if obr is not None:
        procedure = _coded(obr.components(4))
        if procedure:
            found["procedure"] = procedure
            if procedure["scheme"].upper() in CPT_SCHEMES:
                found["cpt"] = {"code": procedure["code"], "meaning": procedure["meaning"]}
        cpt = _coded(obr.components(44))
        if cpt:
            found["cpt"] = {"code": cpt["code"], "meaning": cpt["meaning"]}
        if obr.get(24):
            found["modality"] = obr.get(24).upper()
        if obr.get(31, 2) or obr.get(31):
            found["reason"] = obr.get(31, 2) or obr.get(31)
        if obr.get(16, 2):
            found["ordering_provider"] = xcn_to_pn(obr.components(16))
    if "ordering_provider" not in found and group.orc.get(12, 2):
        found["ordering_provider"] = xcn_to_pn(group.orc.components(12))
    visit = adt.visit(msg)
    if visit.get("referring"):
        found["referring_physician"] = visit["referring"]
    if ipc is not None:
        for key, value in (("accession", ipc.get(1)), ("requested_procedure_id", ipc.get(2)), ("study_uid", ipc.get(3)),
                           ("sps_id", ipc.get(4)), ("modality", ipc.get(5).upper()), ("station_name", ipc.get(7)),
                           ("location", ipc.get(8)), ("station_ae", ipc.get(9))):
            if value:
                found[key] = value
        if _coded(ipc.components(6)):
            found["protocol"] = _coded(ipc.components(6))
    elif obr is not None and obr.get(18):
        found["accession"] = obr.get(18)
    if "study_uid" not in found and group.zds is not None and group.zds.get(1):
        found["study_uid"] = group.zds.get(1)
    return found


def _find(tx: Tx, msg: Hl7Message, group: OrderGroup, patient: Patient) -> Order:
    orc, obr = group.orc, group.obr
    filler = orc.get(3) or (obr.get(3) if obr else "")
    placer = orc.get(2) or (obr.get(2) if obr else "")
    if filler:
        order = order_store.get(tx, filler)
        location, number = "ORC-3", filler
    else:
        app = orc.get(2, 2) or (obr.get(2, 2) if obr else "") or msg.header.sending_app
        order = order_store.by_key(tx, order_store.placer_key(app, placer)) if placer else None
        location, number = "ORC-2", placer
    if not number:
        raise Hl7Error.missing("ORC-2", "placer or filler order number")
    if order is None:
        raise Hl7Error.unknown(location, f"order {number}")
    if order.patient_id != patient.id:
        raise Hl7Error(f"order {number} belongs to another patient", "PID-3")
    return order


def _new(tx: Tx, msg: Hl7Message, group: OrderGroup, leading_dg1: list[Segment], patient: Patient, ctx: Context) -> None:
    orc, obr = group.orc, group.obr
    if obr is None:
        raise Hl7Error.missing("OBR", "observation request segment")
    placer = orc.get(2) or obr.get(2)
    if not placer:
        raise Hl7Error.missing("ORC-2", "placer order number")
    placer_app = orc.get(2, 2) or obr.get(2, 2) or msg.header.sending_app
    if order_store.by_key(tx, order_store.placer_key(placer_app, placer)):
        raise Hl7Error(f"placer order {placer} already exists", "ORC-2", DUPLICATE_KEY_IDENTIFIER)
    found = details(msg, group, leading_dg1)
    if "procedure" not in found:
        raise Hl7Error.missing("OBR-4", "universal service identifier")
    if "modality" not in found:
        raise Hl7Error.missing("OBR-24", "modality (diagnostic service section ID)")
    accession = found.get("accession", "")
    where = "IPC-1" if group.ipc else "OBR-18"
    if len(accession) > 16:
        raise Hl7Error(f"accession number {accession!r} is longer than 16 characters", where, DATA_TYPE_ERROR)
    if accession and order_store.exists(tx, accession):
        raise Hl7Error(f"accession number {accession} already exists", where, DUPLICATE_KEY_IDENTIFIER)
    try:
        accession = accession or next_accession(
            ctx.config.accession_pattern, ctx.now, tx.next_counter, lambda a: order_store.exists(tx, a)
        )
    except RisError as exc:
        raise Hl7Error(str(exc), "OBR-18") from exc
    schedule = ctx.config.schedule(found["modality"])
    order = Order(accession=accession, patient_id=patient.id, placer_order=placer, placer_app=placer_app,
                  created=ctx.at, charset=patient.charset)
    for key in _CHANGEABLE_FIELDS + ("modality",):
        if key in found:
            setattr(order, key, found[key])
    order.requested_procedure_id = found.get("requested_procedure_id") or f"RP{tx.next_counter('rp'):07d}"
    order.sps_id = found.get("sps_id") or f"SP{tx.next_counter('sps'):07d}"
    order.study_uid = found.get("study_uid") or generate_uid(prefix=RIS_UID_ROOT)
    order.station_ae = found.get("station_ae") or schedule.station_ae
    order.station_name = found.get("station_name") or schedule.station_name
    order.location = found.get("location") or schedule.location
    order.protocol = order.protocol or dict(order.procedure)
    order.visit = adt.visit(msg) or dict(patient.visit)
    order.referring_physician = order.referring_physician or order.visit.get("referring", "")
    if not patient.insurance:
        order.flags.append(NO_INSURANCE)
    status.record(order, ORDERED, ctx)
    start = found.get("scheduled")
    if start is None:
        try:
            start = next_free_slot(schedule, lambda day: order_store.booked(tx, order.modality, day.isoformat()), ctx.now)
        except RisError as exc:
            raise Hl7Error(str(exc), "OBR-24") from exc
        how = "next free slot"
    else:
        how = "as ordered"
    _book(tx, order, start)
    note = f"{order.modality} {order.scheduled} ({how})" + ("; no insurance on file" if NO_INSURANCE in order.flags else "")
    status.move(order, SCHEDULED, ctx, note=note)
    order_store.put(tx, order)
    pacs_feed.order_changed(tx, order, patient, "NW", ctx)


def _book(tx: Tx, order: Order, start: datetime) -> None:
    if order.scheduled:
        order_store.release(tx, order.modality, order.scheduled, order.accession)
    order.scheduled = start.isoformat(timespec="seconds")
    order_store.book(tx, order.modality, order.scheduled, order.accession)


def end(tx: Tx, order: Order, final: str, ctx: Context, note: str = "") -> None:
    """Cancel or discontinue: the slot is freed."""
    status.move(order, final, ctx, note=note)
    if order.scheduled:
        order_store.release(tx, order.modality, order.scheduled, order.accession)


def _cancel(tx: Tx, msg: Hl7Message, group: OrderGroup, leading_dg1: list[Segment], patient: Patient, ctx: Context) -> None:
    order = _find(tx, msg, group, patient)
    end(tx, order, CANCELLED, ctx)
    order_store.put(tx, order)
    pacs_feed.order_changed(tx, order, patient, "CA", ctx)


def _discontinue(tx: Tx, msg: Hl7Message, group: OrderGroup, leading_dg1: list[Segment], patient: Patient, ctx: Context) -> None:
    order = _find(tx, msg, group, patient)
    end(tx, order, DISCONTINUED, ctx)
    order_store.put(tx, order)
    pacs_feed.order_changed(tx, order, patient, "DC", ctx)


def _change(tx: Tx, msg: Hl7Message, group: OrderGroup, leading_dg1: list[Segment], patient: Patient, ctx: Context) -> None:
    order = _find(tx, msg, group, patient)
    previous = order_store.get(tx, order.accession)
    if order.status not in CHANGEABLE:
        raise Hl7Error(f"order {order.accession} is {order.status}: it can no longer change", "ORC-1")
    found = details(msg, group, leading_dg1)
    changed = [k for k in _CHANGEABLE_FIELDS if k in found and getattr(order, k) != found[k]]
    for key in changed:
        setattr(order, key, found[key])
    if "modality" in found and found["modality"] != order.modality:
        order_store.release(tx, order.modality, order.scheduled, order.accession)
        order.modality = found["modality"]
        order_store.book(tx, order.modality, order.scheduled, order.accession)
        changed.append("modality")
    start = found.get("scheduled")
    if start is not None and start.isoformat(timespec="seconds") != order.scheduled:
        _book(tx, order, start)
        status.move(order, SCHEDULED, ctx, event="rescheduled", note=order.scheduled)
    status.record(order, "changed", ctx, ", ".join(changed) or "no change")
    order_store.put(tx, order, previous)
    pacs_feed.order_changed(tx, order, patient, "XO", ctx)


def _status_changed(tx: Tx, msg: Hl7Message, group: OrderGroup, leading_dg1: list[Segment], patient: Patient, ctx: Context) -> None:
    order = _find(tx, msg, group, patient)
    code = group.orc.require(5, "order status").upper()
    new = ORDER_STATUS.get(code)
    if new is None:
        raise Hl7Error(f"ORC-5 {code!r}: use one of {', '.join(ORDER_STATUS)}", "ORC-5", TABLE_VALUE_NOT_FOUND)
    if new in (CANCELLED, DISCONTINUED):
        end(tx, order, new, ctx)
    else:
        status.move(order, new, ctx)
    order_store.put(tx, order)
    pacs_feed.order_changed(tx, order, patient, "SC", ctx)


_CONTROLS = {"NW": _new, "CA": _cancel, "DC": _discontinue, "XO": _change, "SC": _status_changed}
