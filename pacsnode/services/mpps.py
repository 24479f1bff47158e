"""Modality Performed Procedure Step SCP of the archive (PS3.4 Annex F), as a state table.

The archive takes MPPS so it knows what a step produced: when the step is COMPLETED and
every instance its Performed Series Sequence references is held, the study is complete
(``services.completion``). Each accepted N-CREATE / N-SET is also queued, in the same
transaction, for the configured ``mpps_forward`` destinations (the RIS: IHE RAD-6/RAD-7
forwarded by the Image Manager acting as Performed Procedure Step Manager).
"""
from __future__ import annotations

import io
import logging
from typing import Callable

from pydicom import Dataset
from pynetdicom.dsutils import decode, encode

from pacsnode.config import Remote
from pacsnode.dicom.status import (
    DUPLICATE_SOP_INSTANCE,
    INVALID_ATTRIBUTE_VALUE,
    MISSING_ATTRIBUTE,
    NO_SUCH_OBJECT_INSTANCE,
    PROCESSING_FAILURE,
)
from pacsnode.errors import PacsError
from pacsnode.index.tables import Tx, WorkflowTables, item_key
from pacsnode.services.identity import now_iso

LOGGER = logging.getLogger(__name__)

MPPS_SOP_CLASS = "1.2.840.10008.3.1.2.3.3"

# PS3.4 F.7.2 statuses.
MAY_NO_LONGER_BE_UPDATED = 0xA710  # Error ID with PROCESSING_FAILURE

IN_PROGRESS, COMPLETED, DISCONTINUED = "IN PROGRESS", "COMPLETED", "DISCONTINUED"


class MppsError(PacsError):
    def __init__(self, status: int, comment: str, error_id: int | None = None) -> None:
        super().__init__(comment)
        self.dimse_status = status
        self.error_id = error_id


def encoded(ds: Dataset) -> bytes:
    return encode(ds, False, True)


def decoded(data: bytes) -> Dataset:
    return decode(io.BytesIO(data), False, True)


def destination_key(remote: Remote) -> str:
    return f"{remote.ae_title}@{remote.host}:{remote.port}"


def enqueue(tx: Tx, remote: Remote, operation: str, sop_class: str, sop_instance: str, ds: Dataset, note: str = "") -> None:
    """Queue one N-CREATE or N-SET for ``remote``; the coordinator sends each destination's
    messages in this order and retries until they are answered."""
    key = f"{destination_key(remote)}/{item_key(tx.next_id('outbox'))}"
    tx.put("outbox", key, {
        "to": f"{remote.ae_title}={remote.host}:{remote.port}", "op": operation, "class": sop_class,
        "instance": sop_instance, "ds": encoded(ds), "created": now_iso(), "attempts": 0, "note": note,
    })


# -- the state table ------------------------------------------------------------------------


def _status_of(attrs: Dataset) -> str:
    return str(attrs.get("PerformedProcedureStepStatus", "") or "").strip().upper()


def _create(step: "_Step") -> str:
    if _status_of(step.attrs) != IN_PROGRESS:
        raise MppsError(INVALID_ATTRIBUTE_VALUE, "N-CREATE must have status IN PROGRESS")
    if "ScheduledStepAttributesSequence" not in step.attrs:
        raise MppsError(MISSING_ATTRIBUTE, "ScheduledStepAttributesSequence is required")
    step.save(step.attrs, IN_PROGRESS)
    return IN_PROGRESS


def _set(step: "_Step") -> str:
    merged = step.merged()
    new = _status_of(step.attrs) or IN_PROGRESS
    if new not in (IN_PROGRESS, COMPLETED, DISCONTINUED):
        raise MppsError(INVALID_ATTRIBUTE_VALUE, "status: IN PROGRESS, COMPLETED or DISCONTINUED")
    if new == COMPLETED and not merged.get("PerformedSeriesSequence"):
        raise MppsError(MISSING_ATTRIBUTE, "PerformedSeriesSequence is required to complete")
    step.save(merged, new)
    return new


def _duplicate(step: "_Step") -> str:
    raise MppsError(DUPLICATE_SOP_INSTANCE, "an MPPS with this SOP Instance UID exists")


def _unknown(step: "_Step") -> str:
    raise MppsError(NO_SUCH_OBJECT_INSTANCE, "no MPPS with this SOP Instance UID")


def _final(step: "_Step") -> str:
    raise MppsError(PROCESSING_FAILURE, "Performed Procedure Step may no longer be updated", MAY_NO_LONGER_BE_UPDATED)


# (state, request) -> action; the action returns the new state or raises MppsError.
TABLE: dict[tuple[str | None, str], Callable[["_Step"], str]] = {
    (None, "N-CREATE"): _create,
    (None, "N-SET"): _unknown,
    (IN_PROGRESS, "N-CREATE"): _duplicate,
    (IN_PROGRESS, "N-SET"): _set,
    (COMPLETED, "N-CREATE"): _duplicate,
    (COMPLETED, "N-SET"): _final,
    (DISCONTINUED, "N-CREATE"): _duplicate,
    (DISCONTINUED, "N-SET"): _final,
}


class _Step:
    def __init__(self, tx: Tx, uid: str, attrs: Dataset, stored: dict | None, calling: str) -> None:
        self.tx, self.uid, self.attrs, self.stored, self.calling = tx, uid, attrs, stored, calling

    def merged(self) -> Dataset:
        merged = decoded(self.stored["ds"])
        for elem in self.attrs:
            merged[elem.tag] = elem
        return merged

    def save(self, ds: Dataset, state: str) -> None:
        refs: dict[str, str] = {}
        series: list[str] = []
        for item in ds.get("PerformedSeriesSequence", []) or []:
            series.append(str(item.get("SeriesInstanceUID", "")))
            for ref in list(item.get("ReferencedImageSequence", []) or []) + list(
                item.get("ReferencedNonImageCompositeSOPInstanceSequence", []) or []
            ):
                if ref.get("ReferencedSOPInstanceUID"):
                    refs[str(ref.ReferencedSOPInstanceUID)] = str(ref.get("ReferencedSOPClassUID", ""))
        steps = list(ds.get("ScheduledStepAttributesSequence", []) or [])
        self.tx.put("mpps", self.uid, {
            "uid": self.uid, "state": state, "ds": encoded(ds), "calling": self.calling,
            "studies": sorted({str(s.StudyInstanceUID) for s in steps if s.get("StudyInstanceUID")}),
            "accessions": sorted({str(s.AccessionNumber) for s in steps if s.get("AccessionNumber")}),
            "series": series, "refs": refs, "announced": False,
            "created": (self.stored or {}).get("created") or now_iso(), "updated": now_iso(),
        })
        self.tx.put("mpps_open", self.uid, {"state": state, "studies": sorted({str(s.StudyInstanceUID) for s in steps if s.get("StudyInstanceUID")})})


def handle(tables: WorkflowTables, request: str, uid: str, attrs: Dataset, calling: str, forward: tuple[Remote, ...]) -> str:
    """Apply one N-CREATE or N-SET; returns the new state or raises MppsError. The request
    is queued for forwarding in the same transaction that stores the step."""
    with tables.write() as tx:
        stored = tx.get("mpps", uid)
        action = TABLE[(stored["state"] if stored else None, request)]
        state = action(_Step(tx, uid, attrs, stored, calling))
        for remote in forward:
            enqueue(tx, remote, request, MPPS_SOP_CLASS, uid, attrs, f"MPPS {state} from {calling}")
    LOGGER.info("MPPS %s %s from %s: %s", request, uid, calling, state)
    return state
