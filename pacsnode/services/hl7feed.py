"""The RIS's HL7 v2 feed into the archive: what the identity check compares against.

IHE Radiology: Procedure Scheduled / Updated (RAD-4, RAD-13: ORM^O01 with ZDS, or OMI^O23
with IPC) fill the ``orders`` table; Patient Update (RAD-12: ADT A08, and A01/A04) and
Patient Merge (A40) keep ``ris_patients`` current and change the stored instances of that
patient too (C-FIND answers and retrieved headers show the current identity). Parsing and
ACKs reuse risnode's HL7 modules; the MLLP listener runs in the coordinator process.
"""
from __future__ import annotations

import logging
from datetime import datetime

from pacsnode.services.identity import PATIENT_KEYS, now_iso, resolve_patient
from pacsnode.services.reconcile import ReconciliationService
from risnode.errors import APPLICATION_INTERNAL_ERROR, UNSUPPORTED_EVENT_CODE, UNSUPPORTED_MESSAGE_TYPE, Hl7Error
from risnode.hl7 import build, charsets
from risnode.hl7.datatypes import dicom_date, sex, xpn_to_pn
from risnode.hl7.message import Header, Hl7Message, Segment, parse, read_header

LOGGER = logging.getLogger(__name__)

# ORC-1 order control -> what becomes of the order; SC takes ORC-5 (HL7 table 0038).
_CONTROL_STATUS = {"NW": "scheduled", "XO": None, "SC": None, "CA": "cancelled", "DC": "discontinued", "OC": "cancelled"}
_ORDER_STATUS = {"SC": "scheduled", "IP": "in_progress", "CM": "completed", "CA": "cancelled", "DC": "discontinued"}


def patient_identity(pid: Segment) -> dict:
    """DICOM-keyword identity of a PID segment (PID-3: the MR repetition, else the first)."""
    patient_id, issuer = "", ""
    for rep in range(1, pid.repetitions(3) + 1):
        if pid.get(3, 5, rep) == "MR" and pid.get(3, 1, rep):
            patient_id, issuer = pid.get(3, 1, rep), pid.get(3, 4, rep)
            break
    if not patient_id:
        patient_id, issuer = pid.require(3, "patient identifier"), pid.get(3, 4)
    return {
        "PatientID": patient_id, "IssuerOfPatientID": issuer, "PatientName": xpn_to_pn(pid.components(5)),
        "PatientBirthDate": dicom_date(pid.get(7)), "PatientSex": sex(pid.get(8)),
    }


class Hl7Feed:
    def __init__(self, archive, application: str = "PACSNODE", facility: str = "RADIOLOGY") -> None:
        self.archive = archive
        self.tables = archive.tables
        self.reconcile = ReconciliationService(archive)
        self.application = application
        self.facility = facility
        self._handlers = {
            ("ADT", "A01"): self._update, ("ADT", "A04"): self._update, ("ADT", "A08"): self._update,
            ("ADT", "A40"): self._merge, ("ORM", "O01"): self._order, ("OMI", "O23"): self._order,
        }

    def receive(self, raw: bytes) -> bytes:
        """Apply one message and return its ACK (AA, or AE/AR with ERR)."""
        try:
            msg = parse(raw)
        except Hl7Error as error:
            LOGGER.warning("HL7 message refused: %s", error.text)
            return self._ack(read_header(raw), error.ack_code, error)
        header = msg.header
        handler = self._handlers.get((header.message_type, header.event))
        if handler is None:
            known = {t for t, _ in self._handlers}
            error = Hl7Error.reject(
                f"{msg.kind} not supported", "MSH-9.2" if header.message_type in known else "MSH-9",
                UNSUPPORTED_EVENT_CODE if header.message_type in known else UNSUPPORTED_MESSAGE_TYPE,
            )
            return self._ack(header, "AR", error)
        try:
            handler(msg, f"hl7 {msg.kind} {header.control_id}")
        except Hl7Error as error:
            LOGGER.warning("%s %s: %s (%s)", msg.kind, header.control_id, error.ack_code, error.location or "message")
            return self._ack(header, error.ack_code, error)
        except Exception:
            LOGGER.exception("%s %s failed", msg.kind, header.control_id)
            return self._ack(header, "AE", Hl7Error("internal error; see the PACS log", "", APPLICATION_INTERNAL_ERROR))
        LOGGER.info("%s %s from %s applied", msg.kind, header.control_id, header.sending_app or "?")
        return self._ack(header, "AA", None)

    def oversized(self, head: bytes, size: int) -> bytes:
        """AR for an MLLP block over the size limit; its head still names the control ID."""
        error = Hl7Error.reject(f"message of {size} bytes is too large", "MSH", APPLICATION_INTERNAL_ERROR)
        return self._ack(read_header(head), "AR", error)

    def _ack(self, header: Header, code: str, error: Hl7Error | None) -> bytes:
        with self.tables.write() as tx:
            control_id = f"{self.application[:8]}{tx.next_id('hl7'):012d}"
        text = build.ack(header, self.application, self.facility, control_id, datetime.now(), code, error)
        return text.encode(charsets.codec(header.charset) or "ascii", "replace")

    # -- patients -----------------------------------------------------------------------------

    def _known(self, msg: Hl7Message) -> dict:
        pid = msg.first("PID")
        if pid is None:
            raise Hl7Error.missing("PID", "patient identification segment")
        return patient_identity(pid)

    def _remember(self, tx, identity: dict) -> dict:
        """Store what the message says about the patient (empty fields change nothing);
        returns the surviving patient's identity."""
        stored = tx.get("ris_patients", identity["PatientID"]) or {}
        stored.update({k: v for k, v in identity.items() if v})
        stored["updated"] = now_iso()
        tx.put("ris_patients", identity["PatientID"], stored)
        return resolve_patient(tx, identity["PatientID"])

    def _update(self, msg: Hl7Message, by: str) -> None:
        identity = self._known(msg)
        with self.tables.write() as tx:
            current = self._remember(tx, identity)
        self.reconcile.update_patient(current, by)

    def _merge(self, msg: Hl7Message, by: str) -> None:
        identity = self._known(msg)
        mrg = msg.first("MRG")
        if mrg is None:
            raise Hl7Error.missing("MRG", "merge segment")
        merged_id = mrg.require(1, "prior patient identifier")
        if merged_id == identity["PatientID"]:
            raise Hl7Error(f"MRG-1 {merged_id} is the surviving patient itself", "MRG-1")
        with self.tables.write() as tx:
            survivor = self._remember(tx, identity)
            merged = tx.get("ris_patients", merged_id) or {"PatientID": merged_id}
            merged.update(merged_into=identity["PatientID"], updated=now_iso())
            tx.put("ris_patients", merged_id, merged)
        self.reconcile.merge_patient(merged_id, {k: survivor.get(k, "") for k in PATIENT_KEYS}, by)
        # The merged-away ID may itself survive earlier merges: their studies follow too.
        with self.tables.read() as tx:
            earlier = [k for k, v in tx.items("ris_patients") if v.get("merged_into") == merged_id]
        for patient_id in earlier:
            self.reconcile.merge_patient(patient_id, {k: survivor.get(k, "") for k in PATIENT_KEYS}, by)

    # -- orders -------------------------------------------------------------------------------

    def _order(self, msg: Hl7Message, by: str) -> None:
        identity = self._known(msg)
        groups = _groups(msg)
        if not groups:
            raise Hl7Error.missing("ORC", "common order segment")
        known: list[tuple[str, str]] = []
        with self.tables.write() as tx:
            self._remember(tx, identity)
            for group in groups:
                known.append(self._apply_order(tx, identity["PatientID"], group))
        for accession, study_uid in known:
            self.reconcile.order_known(accession, study_uid, by)

    def _apply_order(self, tx, patient_id: str, group: dict) -> tuple[str, str]:
        orc, obr, ipc, zds = group["ORC"], group.get("OBR"), group.get("IPC"), group.get("ZDS")
        control = orc.require(1, "order control").upper()
        if control not in _CONTROL_STATUS:
            raise Hl7Error(f"ORC-1 {control!r}: use NW, XO, SC, CA or DC", "ORC-1")
        accession = (ipc.get(1) if ipc else "") or (obr.get(18) if obr else "") or orc.get(3)
        if not accession:
            raise Hl7Error.missing("OBR-18", "accession number")
        study_uid = (ipc.get(3) if ipc else "") or (zds.get(1) if zds else "")
        order = tx.get("orders", accession) or {"accession": accession, "status": "scheduled", "created": now_iso()}
        if order.get("patient_id") and order["patient_id"] != patient_id:
            # The RIS moves orders between patients only by merging them (A40).
            if resolve_patient(tx, order["patient_id"])["PatientID"] != resolve_patient(tx, patient_id)["PatientID"]:
                raise Hl7Error(f"order {accession} belongs to another patient", "PID-3")
        status = _CONTROL_STATUS[control] or (_ORDER_STATUS.get(orc.get(5).upper(), order["status"]) if control == "SC" else order["status"])
        previous_study = order.get("study_uid", "")
        order.update(
            patient_id=patient_id, status=status, updated=now_iso(),
            study_uid=study_uid or previous_study,
            requested_procedure_id=(ipc.get(2) if ipc else "") or (obr.get(19) if obr else "") or order.get("requested_procedure_id", ""),
            sps_id=(ipc.get(4) if ipc else "") or (obr.get(20) if obr else "") or order.get("sps_id", ""),
            modality=((ipc.get(5) if ipc else "") or (obr.get(24) if obr else "") or order.get("modality", "")).upper(),
            procedure=(obr.get(4, 2) or obr.get(4)) if obr else order.get("procedure", ""),
        )
        tx.put("orders", accession, order)
        if previous_study and previous_study != order["study_uid"]:
            tx.delete("order_study", previous_study)
        if order["study_uid"]:
            tx.put("order_study", order["study_uid"], accession)
        return accession, order["study_uid"]


def _groups(msg: Hl7Message) -> list[dict]:
    groups: list[dict] = []
    for seg in msg.segments:
        if seg.name == "ORC":
            groups.append({"ORC": seg})
        elif groups and seg.name in ("OBR", "IPC", "ZDS") and seg.name not in groups[-1]:
            groups[-1][seg.name] = seg
    return groups
