"""Modality Worklist (C-FIND, PS3.4 K.6): the answer dataset of each active step, matching
(pacsnode.dicom.matching rules, inside Scheduled Procedure Step Sequence too) and the
return keys the query asked for."""
from __future__ import annotations

from datetime import datetime
from typing import Iterable, Iterator

from pydicom import Dataset
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.sequence import Sequence

from pacsnode.dicom.matching import build_matcher
from risnode.hl7 import charsets
from risnode.records import ARRIVED, IN_PROGRESS, Order, Patient
from risnode.services.status import ACTIVE

SPS = "ScheduledProcedureStepSequence"
# Scheduled Procedure Step Status (0040,0020) for the order statuses on the worklist.
_STEP_STATUS = {ARRIVED: "ARRIVED", IN_PROGRESS: "STARTED"}


def _code_item(entry: dict) -> Dataset:
    item = Dataset()
    item.CodeValue = entry.get("code", "")
    item.CodingSchemeDesignator = entry.get("scheme", "") or "L"
    item.CodeMeaning = entry.get("meaning", "")[:64]
    return item


def record(patient: Patient, order: Order) -> Dataset:
    """Everything we can answer for one scheduled step."""
    start = datetime.fromisoformat(order.scheduled) if order.scheduled else None
    step = Dataset()
    step.ScheduledStationAETitle = order.station_ae
    step.ScheduledStationName = order.station_name
    step.ScheduledProcedureStepLocation = order.location
    step.ScheduledProcedureStepStartDate = f"{start:%Y%m%d}" if start else ""
    step.ScheduledProcedureStepStartTime = f"{start:%H%M%S}" if start else ""
    step.Modality = order.modality
    step.ScheduledPerformingPhysicianName = ""
    step.ScheduledProcedureStepDescription = order.procedure.get("meaning", "")[:64]
    step.ScheduledProtocolCodeSequence = Sequence([_code_item(order.protocol)] if order.protocol else [])
    step.ScheduledProcedureStepID = order.sps_id
    step.ScheduledProcedureStepStatus = _STEP_STATUS.get(order.status, "SCHEDULED")

    ds = Dataset()
    ds.AccessionNumber = order.accession
    ds.ReferringPhysicianName = order.referring_physician
    ds.PatientName = patient.name
    ds.PatientID = patient.id
    ds.IssuerOfPatientID = patient.issuer
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.OtherPatientIDs = "\\".join(patient.merged_ids)
    ds.Allergies = "\\".join(a[:64] for a in patient.allergies)
    ds.AdmissionID = patient.visit.get("admission_id", "") or order.visit.get("admission_id", "")
    ds.CurrentPatientLocation = order.visit.get("location", "")[:64]
    ds.StudyInstanceUID = order.study_uid
    ds.RequestingPhysician = order.ordering_provider
    ds.RequestedProcedureDescription = order.procedure.get("meaning", "")[:64]
    ds.RequestedProcedureCodeSequence = Sequence([_code_item(order.procedure)] if order.procedure else [])
    ds.RequestedProcedureID = order.requested_procedure_id
    ds.RequestedProcedurePriority = order.priority
    ds.ReasonForTheRequestedProcedure = order.reason[:64]
    ds.ReferencedStudySequence = Sequence([])
    ds.ReferencedPatientSequence = Sequence([])
    ds.ScheduledProcedureStepSequence = Sequence([step])
    texts = [patient.name, order.referring_physician, order.ordering_provider, order.procedure.get("meaning", ""),
             order.reason, *patient.allergies, order.visit.get("location", "")]
    term = charsets.dicom_term_for(texts, order.charset or patient.charset)
    if term:
        ds.SpecificCharacterSet = term
    return ds


def _text(value: object) -> object:
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [str(v) for v in value]
    return "" if value is None else str(value)


def _keys_match(query: Dataset, target: Dataset) -> bool:
    for elem in query:
        if elem.VR == "SQ" or elem.keyword in ("SpecificCharacterSet", "") or elem.keyword not in target:
            continue  # sequences are matched by the caller; unknown keys are not matched on
        matcher = build_matcher(elem.keyword, elem.VR, _text(elem.value))
        if matcher is not None and not matcher(_text(target[elem.keyword].value)):
            return False
    return True


def _step_matches(q: Dataset, step: Dataset, calling_aet: str | None) -> bool:
    date, time = str(q.get("ScheduledProcedureStepStartDate", "") or ""), str(q.get("ScheduledProcedureStepStartTime", "") or "")
    if "-" in date and time:
        # PS3.4 C.2.2.2.5.1: date and time ranges are matched as one date-time range.
        lo_d, _, hi_d = date.partition("-")
        lo_t, _, hi_t = time.partition("-") if "-" in time else (time, "", time)
        low = f"{lo_d}{lo_t}" if lo_d else ""
        high = f"{hi_d}{hi_t or '235959'}" if hi_d else ""
        matcher = build_matcher("ScheduledProcedureStepStartDateTime", "DT", f"{low}-{high}")
        value = f"{step.ScheduledProcedureStepStartDate}{step.ScheduledProcedureStepStartTime}"
        if matcher is not None and not matcher(value):
            return False
        rest = Dataset()  # the query without the two keys just matched (Dataset(q) would share q's elements)
        for elem in q:
            if elem.keyword not in ("ScheduledProcedureStepStartDate", "ScheduledProcedureStepStartTime"):
                rest.add(elem)
        q = rest
    if calling_aet is not None and not str(q.get("ScheduledStationAETitle", "") or "").strip("* "):
        if step.ScheduledStationAETitle != calling_aet.strip():
            return False
    return _keys_match(q, step)


def matches(query: Dataset, target: Dataset, calling_aet: str | None = None) -> bool:
    """``calling_aet`` (when set) stands in for an empty Scheduled Station AE Title."""
    if not _keys_match(query, target):
        return False
    steps = query.get(SPS)
    q_step = steps[0] if steps else Dataset()
    return any(_step_matches(q_step, step, calling_aet) for step in target.get(SPS, []))


def answer(query: Dataset, target: Dataset) -> Dataset:
    """The requested keys with our values (empty when we have none), sequences item by item."""
    out = Dataset()
    if "SpecificCharacterSet" in target:
        out.SpecificCharacterSet = target.SpecificCharacterSet
    for elem in query:
        if elem.keyword == "SpecificCharacterSet":
            continue
        if elem.keyword in target:
            ours = target[elem.keyword]
            if elem.VR == "SQ" and elem.value and len(ours.value):
                out[elem.tag] = DataElement(elem.tag, "SQ", Sequence([answer(elem.value[0], item) for item in ours.value]))
            else:
                out[elem.tag] = ours
        else:
            vr = elem.VR if elem.VR not in ("UN", None) else _vr(elem)
            out[elem.tag] = DataElement(elem.tag, vr, Sequence([]) if vr == "SQ" else None)
    return out


def _vr(elem: DataElement) -> str:
    try:
        return dictionary_VR(elem.tag)
    except KeyError:
        return "UN"


def find(entries: Iterable[tuple[Patient, Order]], query: Dataset, calling_aet: str | None = None) -> Iterator[Dataset]:
    for patient, order in entries:
        if order.status not in ACTIVE:
            continue
        target = record(patient, order)
        if matches(query, target, calling_aet):
            yield answer(query, target)
