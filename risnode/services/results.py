"""Reports (ORU^R01 to the EHR), charges (DFT^P03 to billing) and the superbill.

A final report (F, or C correcting it) is distributed first; the charge follows the EHR's
AA, so an order's status goes reported -> distributed -> billed in that order.
"""
from __future__ import annotations

import csv
import io

from risnode.errors import Conflict, InvalidRequest, NotFound
from risnode.hl7 import build
from risnode.records import ARRIVED, BILLED, DISTRIBUTED, EXAM_COMPLETE, REPORTED, OutboundMessage, Order, Patient
from risnode.services import outbound, status
from risnode.services.context import Context
from risnode.store import orders as order_store
from risnode.store import outbound as queue
from risnode.store import patients as patient_store
from risnode.store.db import Tx

REPORT_STATUSES = {"P": "preliminary", "F": "final", "C": "corrected"}
_REPORTABLE = (EXAM_COMPLETE, REPORTED, DISTRIBUTED, BILLED)


def order_and_patient(tx: Tx, accession: str) -> tuple[Order, Patient]:
    order = order_store.get(tx, accession)
    if order is None:
        raise NotFound(f"no order with accession number {accession}")
    patient = patient_store.resolve(tx, order.patient_id)
    if patient is None:
        raise NotFound(f"order {accession}: patient {order.patient_id} is missing")
    return order, patient


def arrive(tx: Tx, accession: str, ctx: Context) -> Order:
    """Check-in at the front desk."""
    order, _ = order_and_patient(tx, accession)
    status.move(order, ARRIVED, ctx)
    order_store.put(tx, order)
    return order


def report(tx: Tx, accession: str, text: str, radiologist: str, report_status: str, ctx: Context) -> Order:
    report_status = report_status.upper()
    if report_status not in REPORT_STATUSES:
        raise InvalidRequest("status: use P (preliminary), F (final) or C (corrected)")
    if not text.strip() or not radiologist.strip():
        raise InvalidRequest("text and radiologist are required")
    order, patient = order_and_patient(tx, accession)
    if order.status not in _REPORTABLE:
        raise Conflict(f"order {accession} is {order.status}: report after the exam is complete")
    final = order.has_final_report()
    if report_status == "C" and not final:
        raise Conflict(f"order {accession} has no final report to correct: send F")
    if report_status in ("P", "F") and final:
        raise Conflict(f"order {accession} already has a final report: send C to correct it")
    entry = {"status": report_status, "text": text, "radiologist": radiologist.strip(), "at": ctx.at}
    order.reports.append(entry)
    status.move(order, REPORTED, ctx, event=f"{REPORT_STATUSES[report_status]} report", note=radiologist.strip())
    outbound.enqueue(tx, ctx, outbound.EHR, "ORU^R01", accession,
                     lambda cid: build.oru(patient, order, entry, ctx.config.application, ctx.config.facility, cid, ctx.now),
                     DISTRIBUTED)
    order_store.put(tx, order)
    return order


def acknowledged(tx: Tx, message: OutboundMessage, ctx: Context) -> None:
    """An AA came back: the order moves on, and a distributed final report is charged."""
    order = order_store.get(tx, message.accession) if message.accession else None  # ADT to the PACS: no order
    if order is None:
        return
    billed = any(e.get("event") == BILLED for e in order.timeline)
    if message.on_ack == DISTRIBUTED:
        new = BILLED if billed else DISTRIBUTED
        if status.can_move(order, new):
            status.move(order, new, ctx, event=DISTRIBUTED, note=message.control_id)
        else:
            status.record(order, DISTRIBUTED, ctx, message.control_id)
        if order.has_final_report() and not billed and not queue.pending_for(tx, order.accession, "DFT^P03"):
            patient = patient_store.resolve(tx, order.patient_id)
            outbound.enqueue(tx, ctx, outbound.BILLING, "DFT^P03", order.accession,
                             lambda cid: build.dft(patient, order, ctx.config.application, ctx.config.facility, cid, ctx.now),
                             BILLED)
    elif message.on_ack == "pacs":
        status.record(order, "sent to pacs", ctx, f"{message.kind} {message.control_id}")
    elif message.on_ack == BILLED:
        if status.can_move(order, BILLED):
            status.move(order, BILLED, ctx, note=message.control_id)
        else:
            status.record(order, BILLED, ctx, message.control_id)
    order_store.put(tx, order)


def superbill(order: Order, patient: Patient) -> dict:
    cpt = order.cpt or ({"code": order.procedure.get("code", ""), "meaning": order.procedure.get("meaning", "")})
    report = next((r for r in reversed(order.reports) if r["status"] in ("F", "C")), None)
    return {
        "accession": order.accession,
        "patient": {"id": patient.id, "issuer": patient.issuer, "name": patient.name, "birth_date": patient.birth_date,
                    "sex": patient.sex, "address": patient.address},
        "insurance": patient.insurance,
        "referring_physician": order.referring_physician,
        "ordering_provider": order.ordering_provider,
        "procedure": {"cpt": cpt.get("code", ""), "description": cpt.get("meaning", ""), "modality": order.modality},
        "diagnoses": [{"icd10": d.get("code", ""), "description": d.get("meaning", "")} for d in order.diagnoses],
        "dates": {"ordered": order.created, "scheduled": order.scheduled, "performed": order.performed.get("start", ""),
                  "reported": report["at"] if report else ""},
        "flags": order.flags,
        "status": order.status,
    }


CSV_COLUMNS = ("accession", "patient_id", "patient_name", "birth_date", "sex", "insurance_company", "insurance_plan",
               "policy_number", "group_number", "referring_physician", "ordering_provider", "cpt_code", "cpt_description",
               "icd10_codes", "icd10_descriptions", "date_of_service", "date_reported")


def superbill_csv(bill: dict) -> str:
    ins = bill["insurance"][0] if bill["insurance"] else {}
    row = {
        "accession": bill["accession"], "patient_id": bill["patient"]["id"], "patient_name": bill["patient"]["name"],
        "birth_date": bill["patient"]["birth_date"], "sex": bill["patient"]["sex"],
        "insurance_company": ins.get("company", ""), "insurance_plan": ins.get("plan_id", ""),
        "policy_number": ins.get("policy_number", ""), "group_number": ins.get("group_number", ""),
        "referring_physician": bill["referring_physician"], "ordering_provider": bill["ordering_provider"],
        "cpt_code": bill["procedure"]["cpt"], "cpt_description": bill["procedure"]["description"],
        "icd10_codes": ";".join(d["icd10"] for d in bill["diagnoses"]),
        "icd10_descriptions": ";".join(d["description"] for d in bill["diagnoses"]),
        "date_of_service": bill["dates"]["performed"] or bill["dates"]["scheduled"], "date_reported": bill["dates"]["reported"],
    }
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    writer.writerow(row)
    return out.getvalue()
