"""What the RIS keeps: plain dataclasses stored as msgpack maps; no I/O here.

Names follow the API's JSON. Datetimes are local ISO 8601 strings to the second.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

# Order statuses as the API spells them, in workflow order.
ORDERED = "ordered"
SCHEDULED = "scheduled"
ARRIVED = "arrived"
IN_PROGRESS = "in_progress"
EXAM_COMPLETE = "exam_complete"
REPORTED = "reported"
DISTRIBUTED = "distributed"
BILLED = "billed"
CANCELLED = "cancelled"
DISCONTINUED = "discontinued"
STATUSES = (ORDERED, SCHEDULED, ARRIVED, IN_PROGRESS, EXAM_COMPLETE, REPORTED, DISTRIBUTED, BILLED, CANCELLED, DISCONTINUED)


class _Record:
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        # Keys written by a newer version are ignored rather than refused.
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class Patient(_Record):
    id: str
    issuer: str = ""
    name: str = ""  # DICOM PN: family^given^middle^prefix^suffix
    birth_date: str = ""  # YYYYMMDD
    sex: str = ""
    address: str = ""
    phone: str = ""
    # The DICOM Specific Character Set term the demographics arrived in (None: ASCII).
    charset: str | None = None
    insurance: list[dict] = field(default_factory=list)
    allergies: list[str] = field(default_factory=list)
    visit: dict = field(default_factory=dict)  # admission_id, location, patient_class, referring
    merged_into: str = ""
    merged_ids: list[str] = field(default_factory=list)
    updated: str = ""


@dataclass
class Order(_Record):
    accession: str
    patient_id: str
    status: str = ORDERED
    placer_order: str = ""
    placer_app: str = ""
    requested_procedure_id: str = ""
    sps_id: str = ""
    study_uid: str = ""
    modality: str = ""
    procedure: dict = field(default_factory=dict)  # code, meaning, scheme
    cpt: dict = field(default_factory=dict)  # code, meaning
    protocol: dict = field(default_factory=dict)  # code, meaning, scheme
    diagnoses: list[dict] = field(default_factory=list)  # code, meaning, scheme
    scheduled: str = ""  # ISO datetime of the step's start
    station_ae: str = ""
    station_name: str = ""
    location: str = ""
    priority: str = "ROUTINE"
    reason: str = ""
    referring_physician: str = ""  # PN
    ordering_provider: str = ""  # PN
    visit: dict = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    charset: str | None = None
    performed: dict = field(default_factory=dict)  # mpps_uid, station_ae, start, end, series
    reports: list[dict] = field(default_factory=list)  # text, radiologist, status (P/F/C), at
    timeline: list[dict] = field(default_factory=list)  # at, status, event, source, note
    created: str = ""

    def has_final_report(self) -> bool:
        return any(r["status"] in ("F", "C") for r in self.reports)


@dataclass
class OutboundMessage(_Record):
    id: int
    role: str  # "ehr" or "billing": the endpoint is resolved from the config when sending
    kind: str  # ORU^R01, DFT^P03
    control_id: str
    accession: str
    payload: bytes
    state: str = "pending"  # pending -> acked
    attempts: int = 0
    last_error: str = ""
    created: str = ""
    next_attempt: str = ""
    acked: str = ""
    # What an AA means for the order: "distributed" (ORU) or "billed" (DFT).
    on_ack: str = ""

    def summary(self) -> dict:
        data = self.to_dict()
        data["payload"] = self.payload.decode("utf-8", "replace")
        return data
