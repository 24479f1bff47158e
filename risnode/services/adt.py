"""ADT: register (A01/A04), update demographics (A08), merge patients (A40)."""
from __future__ import annotations

import logging

from risnode.errors import Hl7Error
from risnode.hl7 import charsets
from risnode.hl7.datatypes import dicom_date, sex, xcn_to_pn, xpn_to_pn
from risnode.hl7.message import Hl7Message, Segment
from risnode.records import Patient
from risnode.services import pacs_feed, status
from risnode.services.context import Context
from risnode.store import orders as order_store
from risnode.store import patients as patient_store
from risnode.store.db import Tx

LOGGER = logging.getLogger(__name__)


def patient_id(pid: Segment) -> tuple[str, str]:
    """(ID, assigning authority) of PID-3: the MR repetition, else the first."""
    for rep in range(1, pid.repetitions(3) + 1):
        if pid.get(3, 5, rep) == "MR" and pid.get(3, 1, rep):
            return pid.get(3, 1, rep), pid.get(3, 4, rep)
    value = pid.require(3, "patient identifier")
    return value, pid.get(3, 4)


def insurance(msg: Hl7Message) -> list[dict]:
    plans = []
    for in1 in msg.all("IN1"):
        plans.append({
            "plan_id": in1.get(2), "plan": in1.get(2, 2), "company_id": in1.get(3), "company": in1.get(4),
            "group_number": in1.get(8), "group_name": in1.get(9), "plan_type": in1.get(15),
            "insured_name": xpn_to_pn(in1.components(16)), "relationship": in1.get(17), "policy_number": in1.get(36),
        })
    return [p for p in plans if any(p.values())]


def visit(msg: Hl7Message) -> dict:
    pv1 = msg.first("PV1")
    if pv1 is None:
        return {}
    return {
        "patient_class": pv1.get(2), "location": "^".join(pv1.components(3)).strip("^"),
        "referring": xcn_to_pn(pv1.components(8)), "admission_id": pv1.get(19),
    }


def _apply_pid(patient: Patient, msg: Hl7Message, pid: Segment, ctx: Context) -> Patient:
    issuer = patient_id(pid)[1]
    if issuer:
        patient.issuer = issuer
    name = xpn_to_pn(pid.components(5))
    if name:
        patient.name = name
    for attr, value in (("birth_date", dicom_date(pid.get(7))), ("sex", sex(pid.get(8))),
                        ("address", " ".join(x for x in pid.components(11)[:6] if x)), ("phone", pid.get(13))):
        if value:
            setattr(patient, attr, value)
    patient.charset = charsets.dicom_term(msg.header.charset or charsets.guess(msg.raw))
    plans = insurance(msg)
    if plans:
        patient.insurance = plans
    allergies = [a.get(3, 2) or a.get(3) for a in msg.all("AL1")]
    if any(allergies):
        patient.allergies = [a for a in allergies if a]
    patient.visit = visit(msg) or patient.visit
    patient.updated = ctx.at
    return patient


def register(tx: Tx, msg: Hl7Message, ctx: Context) -> None:
    """A01/A04/A08: create or update the patient (a merged-away ID updates the survivor)."""
    pid = msg.first("PID")
    if pid is None:
        raise Hl7Error.missing("PID", "patient identification segment")
    pid_value, _ = patient_id(pid)
    patient = patient_store.resolve(tx, pid_value) or Patient(id=pid_value)
    patient_store.put(tx, _apply_pid(patient, msg, pid, ctx))
    pacs_feed.patient_changed(tx, patient, ctx)


def merge(tx: Tx, msg: Hl7Message, ctx: Context) -> None:
    """A40: the MRG-1 patient merges into the PID-3 patient, orders included."""
    pid, mrg = msg.first("PID"), msg.first("MRG")
    if pid is None:
        raise Hl7Error.missing("PID", "patient identification segment")
    if mrg is None:
        raise Hl7Error.missing("MRG", "merge segment")
    surviving_id, _ = patient_id(pid)
    merged_id = mrg.require(1, "prior patient identifier")
    merged = patient_store.get(tx, merged_id)
    if merged is None or merged.merged_into:
        raise Hl7Error.unknown("MRG-1", f"patient {merged_id} (or already merged)")
    if patient_store.surviving_id(tx, surviving_id) == merged_id:
        raise Hl7Error(f"MRG-1 {merged_id} is the surviving patient itself", "MRG-1")
    surviving = patient_store.resolve(tx, surviving_id) or Patient(id=surviving_id)
    surviving = _apply_pid(surviving, msg, pid, ctx)
    surviving.merged_ids = sorted(set(surviving.merged_ids) | {merged_id} | set(merged.merged_ids))
    if not surviving.insurance:
        surviving.insurance = merged.insurance
    moved = order_store.for_patient(tx, merged_id)
    for order in moved:
        previous = order_store.get(tx, order.accession)
        order.patient_id = surviving.id
        status.record(order, "patient merged", ctx, f"{merged_id} -> {surviving.id}")
        order_store.put(tx, order, previous)
    merged.merged_into = surviving.id
    merged.updated = ctx.at
    patient_store.put(tx, merged)
    patient_store.put(tx, surviving)
    patient_store.alias(tx, merged_id, surviving.id)
    pacs_feed.patients_merged(tx, surviving, merged_id, ctx)
    LOGGER.info("patients merged, %d order(s) moved", len(moved))
