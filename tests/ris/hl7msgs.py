"""HL7 v2 test messages built field by field (numbers as the standard counts them)."""
from __future__ import annotations

import itertools

_ids = itertools.count(1)


def seg(name: str, fields: dict[int, str]) -> str:
    last = max(fields, default=0)
    return "|".join([name] + [fields.get(n, "") for n in range(1, last + 1)])


def msh(kind: str, control_id: str | None = None, version: str = "2.5.1", charset: str = "") -> str:
    fields = {2: "^~\\&", 3: "HIS", 4: "HOSP", 5: "RIS", 6: "RAD", 7: "20240501120000", 9: kind,
              10: control_id or f"T{next(_ids):08d}", 11: "P", 12: version}
    if charset:
        fields[18] = charset
    # MSH-1 is the field separator itself: MSH-2 follows "MSH|" directly.
    return "MSH|" + "|".join(fields.get(n, "") for n in range(2, max(fields) + 1))


def message(*segments: str) -> str:
    return "\r".join(segments) + "\r"


def pid(patient_id: str, name: str = "DOE^JOHN", birth: str = "19700101", sex: str = "M") -> str:
    return seg("PID", {1: "1", 3: f"{patient_id}^^^HOSP^MR", 5: name, 7: birth, 8: sex, 11: "1 Main St^^Springfield^^12345"})


def pv1(referring: str = "1234^WELBY^MARCUS", location: str = "RAD^101") -> str:
    return seg("PV1", {1: "1", 2: "O", 3: location, 8: referring, 19: "V100"})


def in1(company: str = "Acme Health", policy: str = "POL123") -> str:
    return seg("IN1", {1: "1", 2: "PLAN1^Gold", 3: "ACME01", 4: company, 8: "GRP9", 16: "DOE^JOHN", 17: "SEL", 36: policy})


def adt(event: str, patient_id: str, name: str = "DOE^JOHN", insured: bool = True, control_id: str | None = None,
        charset: str = "", extra: tuple[str, ...] = ()) -> str:
    segments = [msh(f"ADT^{event}^ADT_A01", control_id, charset=charset), seg("EVN", {1: event}), pid(patient_id, name), pv1()]
    if insured:
        segments.append(in1())
    return message(*segments, *extra)


def merge(surviving: str, merged: str, control_id: str | None = None) -> str:
    return message(msh("ADT^A40^ADT_A39", control_id), seg("EVN", {1: "A40"}), pid(surviving), seg("MRG", {1: f"{merged}^^^HOSP^MR"}))


def orm(patient_id: str, placer: str, control: str = "NW", modality: str = "CT", code: str = "74177",
        meaning: str = "CT ABD PELVIS W CONTRAST", when: str = "", filler: str = "", study_uid: str = "",
        accession: str = "", control_id: str | None = None, order_status: str = "", diagnoses=(("K35.80", "Acute appendicitis"),)) -> str:
    """ORM^O01 as v2.3 senders write it: timing in ORC-7/OBR-27, ZDS with the Study Instance UID."""
    timing = f"^^^{when}^^R" if when else ""
    segments = [
        msh("ORM^O01", control_id, version="2.3"), pid(patient_id), pv1(),
        seg("ORC", {1: control, 2: f"{placer}^HIS", 3: filler, 5: order_status, 7: timing, 12: "5678^HOUSE^GREGORY"}),
        seg("OBR", {1: "1", 2: f"{placer}^HIS", 3: filler, 4: f"{code}^{meaning}^C4", 16: "5678^HOUSE^GREGORY",
                    18: accession, 24: modality, 27: timing, 31: "^Abdominal pain"}),
    ]
    segments += [seg("DG1", {1: str(n), 2: "I10", 3: f"{c}^{m}^I10"}) for n, (c, m) in enumerate(diagnoses, 1)]
    if study_uid:
        segments.append(seg("ZDS", {1: f"{study_uid}^HIS^Application^DICOM"}))
    return message(*segments)


def omi(patient_id: str, placer: str, modality: str = "MR", when: str = "", accession: str = "", station_ae: str = "",
        control_id: str | None = None, study_uid: str = "") -> str:
    """OMI^O23 (v2.5): TQ1 timing and IPC with the DICOM identifiers the placer already has."""
    return message(
        msh("OMI^O23^OMI_O23", control_id), pid(patient_id), pv1(), in1(),
        seg("ORC", {1: "NW", 2: f"{placer}^HIS", 12: "5678^HOUSE^GREGORY"}),
        seg("TQ1", {1: "1", 7: when, 9: "S"}),
        seg("OBR", {1: "1", 2: f"{placer}^HIS", 4: "70553^MRI BRAIN W/WO CONTRAST^C4", 16: "5678^HOUSE^GREGORY"}),
        seg("DG1", {1: "1", 2: "I10", 3: "G43.909^Migraine^I10"}),
        seg("IPC", {1: accession, 2: "", 3: study_uid, 4: "", 5: modality, 6: "MRBR1^Brain routine^99LOCAL", 9: station_ae}),
    )
