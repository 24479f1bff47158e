"""Build outbound HL7 v2: ACK (with ERR), ORU^R01 (the report), DFT^P03 (the charge).

A field is given as a str, a list of components (a tuple inside it holds subcomponents),
or ``Reps([...])`` for repetitions; every value is escaped here and nowhere else.
"""
from __future__ import annotations

from datetime import datetime

from risnode.errors import ERROR_TEXT, Hl7Error
from risnode.hl7.datatypes import format_dtm, pn_to_xpn
from risnode.hl7.message import Header
from risnode.records import Order, Patient

VERSION = "2.5.1"
# LOINC "Radiology Study observation (narrative)", the usual OBX-3 of a report's text.
REPORT_OBSERVATION = ["18782-3", "Radiology Study observation (narrative)", "LN"]
_ESCAPES = [("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\")]


class Reps(list):
    """Repetitions of a field."""


def escape(text: str) -> str:
    for char, seq in _ESCAPES:
        text = text.replace(char, seq)
    # A CR would end the segment; line structure is carried by separate OBX segments.
    return text.replace("\r\n", " ").replace("\r", " ").replace("\n", " ")


def _field(value) -> str:
    if isinstance(value, Reps):
        return "~".join(_field(v) for v in value)
    if isinstance(value, (list, tuple)):
        parts = ["&".join(escape(s) for s in c) if isinstance(c, tuple) else escape(str(c)) for c in value]
        return "^".join(parts).rstrip("^")
    return escape(str(value)) if value is not None else ""


def segment(name: str, values: dict[int, object]) -> str:
    """``values`` maps field numbers (as the standard counts them) to values."""
    last = max(values, default=0)
    return "|".join([name] + [_field(values.get(n, "")) for n in range(1, last + 1)])


def msh(app: str, facility: str, to_app: str, to_facility: str, message_type: str, control_id: str, now: datetime,
        processing_id: str = "P", version: str = VERSION, charset: str = "") -> str:
    fields = [
        "MSH", "^~\\&", escape(app), escape(facility), escape(to_app), escape(to_facility), format_dtm(now), "",
        message_type, escape(control_id), processing_id, version,
    ]
    if charset:
        fields += [""] * 5 + [charset]
    return "|".join(fields)


def join(segments: list[str]) -> str:
    return "\r".join(segments) + "\r"


def ack(inbound: Header, app: str, facility: str, control_id: str, now: datetime, code: str = "AA",
        error: Hl7Error | None = None) -> str:
    """The original-mode ACK: MSA, and ERR naming the field when ``error`` is given.

    ERR-1 is the v2.3 form (still read by many systems), ERR-2..8 the v2.5 form."""
    event = inbound.event or ""
    segments = [
        msh(app, facility, inbound.sending_app, inbound.sending_facility, f"ACK^{event}^ACK" if event else "ACK",
            control_id, now, inbound.processing_id[:1] or "P", inbound.version or VERSION, inbound.charset),
        segment("MSA", {1: code, 2: inbound.control_id, 3: error.text[:80] if error else ""}),
    ]
    if error is not None:
        seg, fld, comp = _location(error.location)
        code_text = ERROR_TEXT.get(error.code, "")
        segments.append(segment("ERR", {
            1: [seg, "1" if seg else "", fld, (str(error.code), code_text, "HL70357")],
            2: [seg, "1" if seg else "", fld, "1" if fld else "", comp],
            3: [str(error.code), code_text, "HL70357"],
            4: "E",
            8: error.text,
        }))
    return join(segments)


def _location(location: str) -> tuple[str, str, str]:
    seg, _, rest = location.partition("-")
    fld, _, comp = rest.partition(".")
    return seg, fld, comp


def _pid(patient: Patient) -> str:
    return segment("PID", {
        1: "1",
        3: [patient.id, "", "", patient.issuer, "MR"],
        5: pn_to_xpn(patient.name),
        7: patient.birth_date,
        8: patient.sex,
    })


def _pv1(order: Order) -> str:
    visit = order.visit
    return segment("PV1", {
        1: "1",
        2: visit.get("patient_class") or "O",
        3: visit.get("location", ""),
        8: [""] + pn_to_xpn(order.referring_physician) if order.referring_physician else "",
        19: visit.get("admission_id", ""),
    })


def _code(entry: dict, default_scheme: str = "") -> list[str]:
    return [entry.get("code", ""), entry.get("meaning", ""), entry.get("scheme", "") or default_scheme] if entry else []


def oru(patient: Patient, order: Order, report: dict, app: str, facility: str, control_id: str, now: datetime) -> str:
    """ORU^R01 carrying one report: OBR-25 and OBX-11 give its status (P, F or C)."""
    observed = order.performed.get("start") or order.scheduled
    radiologist = report["radiologist"].split("^")
    reported = datetime.fromisoformat(report["at"])
    segments = [
        msh(app, facility, "", "", "ORU^R01^ORU_R01", control_id, now, charset="UNICODE UTF-8"),
        _pid(patient),
        _pv1(order),
        segment("ORC", {1: "RE", 2: order.placer_order, 3: order.accession, 5: "CM"}),
        segment("OBR", {
            1: "1", 2: order.placer_order, 3: order.accession, 4: _code(order.procedure),
            7: _dtm(observed), 16: [""] + pn_to_xpn(order.ordering_provider) if order.ordering_provider else "",
            18: order.accession, 19: order.requested_procedure_id, 22: format_dtm(reported), 24: order.modality,
            25: report["status"], 32: [("", radiologist[0], radiologist[1] if len(radiologist) > 1 else "")],
        }),
    ]
    for n, line in enumerate(report["text"].splitlines() or [""], start=1):
        segments.append(segment("OBX", {
            1: str(n), 2: "TX", 3: REPORT_OBSERVATION, 4: "1", 5: line, 11: report["status"], 14: format_dtm(reported),
        }))
    segments.append(segment("ZDS", {1: [order.study_uid, app, "Application", "DICOM"]}))
    return join(segments)


def dft(patient: Patient, order: Order, app: str, facility: str, control_id: str, now: datetime) -> str:
    """DFT^P03 posting the procedure (CPT, FT1-25) with its diagnoses (ICD-10, FT1-19 and DG1)."""
    performed = order.performed.get("start") or order.scheduled
    diagnoses = Reps(_code(d, "I10") for d in order.diagnoses)
    cpt = [order.cpt.get("code", ""), order.cpt.get("meaning", ""), "C4"] if order.cpt else _code(order.procedure)
    segments = [
        msh(app, facility, "", "", "DFT^P03^DFT_P03", control_id, now, charset="UNICODE UTF-8"),
        segment("EVN", {1: "P03", 2: format_dtm(now)}),
        _pid(patient),
        _pv1(order),
        segment("FT1", {
            1: "1", 4: _dtm(performed), 5: format_dtm(now), 6: "CG", 7: cpt, 10: "1", 19: diagnoses,
            20: [order.performed.get("station_ae", "")],
            21: [""] + pn_to_xpn(order.ordering_provider) if order.ordering_provider else "",
            23: order.accession, 25: cpt,
        }),
    ]
    for n, diagnosis in enumerate(order.diagnoses, start=1):
        segments.append(segment("DG1", {1: str(n), 2: diagnosis.get("scheme") or "I10", 3: _code(diagnosis, "I10"), 6: "F"}))
    for n, ins in enumerate(patient.insurance, start=1):
        segments.append(segment("IN1", {
            1: str(n), 2: [ins.get("plan_id", ""), ins.get("plan", "")], 3: ins.get("company_id", ""),
            4: ins.get("company", ""), 8: ins.get("group_number", ""), 16: pn_to_xpn(ins.get("insured_name", "")),
            17: ins.get("relationship", ""), 36: ins.get("policy_number", ""),
        }))
    return join(segments)


def _dtm(iso: str) -> str:
    return format_dtm(datetime.fromisoformat(iso)) if iso else ""


# -- to the PACS (IHE RAD-4/RAD-13 procedure scheduled/updated, RAD-12 patient update) -------

# Our order status -> ORC-5 (HL7 table 0038).
ORDER_STATUS = {"ordered": "SC", "scheduled": "SC", "arrived": "SC", "in_progress": "IP", "exam_complete": "CM",
                "reported": "CM", "distributed": "CM", "billed": "CM", "cancelled": "CA", "discontinued": "DC"}


def adt_update(patient: Patient, app: str, facility: str, control_id: str, now: datetime) -> str:
    """ADT^A08: the patient's current demographics."""
    return join([
        msh(app, facility, "", "", "ADT^A08^ADT_A01", control_id, now, charset="UNICODE UTF-8"),
        segment("EVN", {1: "A08", 2: format_dtm(now)}),
        _pid(patient),
        segment("PV1", {1: "1", 2: patient.visit.get("patient_class") or "O", 19: patient.visit.get("admission_id", "")}),
    ])


def adt_merge(surviving: Patient, merged_id: str, app: str, facility: str, control_id: str, now: datetime) -> str:
    """ADT^A40: ``merged_id`` (MRG-1) is merged into the surviving patient (PID-3)."""
    return join([
        msh(app, facility, "", "", "ADT^A40^ADT_A39", control_id, now, charset="UNICODE UTF-8"),
        segment("EVN", {1: "A40", 2: format_dtm(now)}),
        _pid(surviving),
        segment("MRG", {1: [merged_id, "", "", surviving.issuer, "MR"]}),
    ])


def procedure(patient: Patient, order: Order, control: str, app: str, facility: str, control_id: str, now: datetime) -> str:
    """OMI^O23 (v2.5.1): the order as scheduled, with the DICOM identifiers in IPC; ORC-1 is
    NW (new), XO (changed), SC (status), CA or DC."""
    start = _dtm(order.scheduled)
    return join([
        msh(app, facility, "", "", "OMI^O23^OMI_O23", control_id, now, charset="UNICODE UTF-8"),
        _pid(patient),
        _pv1(order),
        segment("ORC", {1: control, 2: [order.placer_order, order.placer_app], 3: order.accession,
                        5: ORDER_STATUS.get(order.status, "SC"), 7: ["", "", "", start]}),
        segment("TQ1", {1: "1", 7: start, 9: {"STAT": "S", "HIGH": "A"}.get(order.priority, "R")}),
        segment("OBR", {1: "1", 2: order.placer_order, 3: order.accession, 4: _code(order.procedure),
                        18: order.accession, 19: order.requested_procedure_id, 20: order.sps_id, 24: order.modality}),
        segment("IPC", {1: order.accession, 2: order.requested_procedure_id, 3: order.study_uid, 4: order.sps_id,
                        5: order.modality, 6: _code(order.protocol), 7: order.station_name, 8: order.location, 9: order.station_ae}),
    ])
