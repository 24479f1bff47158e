"""Storage Commitment Push Model SCP (PS3.4 Annex J) on pynetdicom.

N-ACTION (Request Storage Commitment) is answered at once; the instances are then checked
in a thread of their own (``services.commitment.verify``) and the result goes back as an
N-EVENT-REPORT: on the same association while the requester keeps it open, otherwise on a
new association to the requester's AE title (it must be a configured ``--remote``), where
we propose the SCP role with SCP/SCU Role Selection Negotiation (PS3.4 J.3.3).
"""
from __future__ import annotations

import logging
import threading
import time

from pydicom import Dataset
from pydicom.sequence import Sequence
from pynetdicom import build_context, build_role, evt
from pynetdicom.pdu_primitives import A_RELEASE

from pacsnode.dicom.status import (
    INVALID_ARGUMENT_VALUE,
    NO_SUCH_ACTION,
    NO_SUCH_ARGUMENT,
    PROCESSING_FAILURE,
    SUCCESS,
    status_dataset,
)
from pacsnode.dicom.uids import QUERY_TRANSFER_SYNTAXES
from pacsnode.dimse.sockets import set_nodelay
from pacsnode.services.commitment import CommitmentResult, verify

LOGGER = logging.getLogger(__name__)

STORAGE_COMMITMENT_PUSH = "1.2.840.10008.1.20.1"
# The well-known SOP Instance of the Storage Commitment Push Model (PS3.4 J.3.1).
STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
REQUEST_STORAGE_COMMITMENT = 1  # Action Type ID
ALL_COMMITTED, SOME_FAILED = 1, 2  # Event Type IDs


# Retries of the report on a new association, and how long to wait for a reply each time.
_NEW_ASSOCIATION_ATTEMPTS = 3
_REPORT_TIMEOUT = 5.0
# How long a requester that is about to release has to say so before we report on its association.
_RELEASE_GRACE = 0.2


def references(info: Dataset) -> list[tuple[str, str]]:
    """(class, instance) pairs of the request's Referenced SOP Sequence."""
    out = []
    for item in info.get("ReferencedSOPSequence", []) or []:
        uid = str(item.get("ReferencedSOPInstanceUID", "") or "").strip()
        if uid:
            out.append((str(item.get("ReferencedSOPClassUID", "") or "").strip(), uid))
    return out


def event_information(transaction_uid: str, result: CommitmentResult, ae_title: str) -> tuple[int, Dataset]:
    """(Event Type ID, Event Information) of the N-EVENT-REPORT (PS3.4 J.3.3.1.1)."""
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    if result.committed:
        ds.RetrieveAETitle = ae_title
        items = []
        for class_uid, uid in result.committed:
            item = Dataset()
            item.ReferencedSOPClassUID = class_uid
            item.ReferencedSOPInstanceUID = uid
            items.append(item)
        ds.ReferencedSOPSequence = Sequence(items)
    if result.failed:
        items = []
        for class_uid, uid, reason in result.failed:
            item = Dataset()
            item.ReferencedSOPClassUID = class_uid
            item.ReferencedSOPInstanceUID = uid
            item.FailureReason = reason
            items.append(item)
        ds.FailedSOPSequence = Sequence(items)
    return (SOME_FAILED if result.failed else ALL_COMMITTED), ds


def on_n_action(event: evt.Event, archive) -> tuple[Dataset, Dataset | None]:
    req = event.request
    calling = event.assoc.requestor.ae_title
    if req.ActionTypeID != REQUEST_STORAGE_COMMITMENT:
        return status_dataset(NO_SUCH_ACTION, "Action Type ID must be 1 (Request Storage Commitment)"), None
    try:
        info = event.action_information
        transaction_uid = str(info.get("TransactionUID", "") or "").strip()
        refs = references(info)
    except Exception:
        LOGGER.exception("storage commitment request from %s cannot be decoded", calling)
        return status_dataset(PROCESSING_FAILURE, "cannot decode the Action Information"), None
    if not transaction_uid:
        return status_dataset(NO_SUCH_ARGUMENT, "Transaction UID is required"), None
    if not refs:
        return status_dataset(INVALID_ARGUMENT_VALUE, "Referenced SOP Sequence is empty"), None
    LOGGER.info("storage commitment %s from %s: %d instance(s)", transaction_uid, calling, len(refs))
    thread = threading.Thread(
        target=_commit_and_report, args=(event.assoc, archive, calling, transaction_uid, refs),
        name="storage-commitment", daemon=True,
    )
    thread.start()
    return status_dataset(SUCCESS), None


def _commit_and_report(assoc, archive, calling: str, transaction_uid: str, refs: list[tuple[str, str]]) -> None:
    try:
        result = verify(archive.index, archive.blobs, refs)
        event_type, info = event_information(transaction_uid, result, archive.config.ae_title)
    except Exception:
        LOGGER.exception("storage commitment %s: verification failed", transaction_uid)
        result = CommitmentResult(failed=[(c, u, PROCESSING_FAILURE) for c, u in refs])
        event_type, info = event_information(transaction_uid, result, archive.config.ae_title)
    LOGGER.info(
        "storage commitment %s: %d committed, %d failed", transaction_uid, len(result.committed), len(result.failed)
    )
    # pynetdicom pauses the acceptor's reactor for the send, which waits until the
    # N-ACTION response has gone out: the report cannot overtake it.
    if _report_on(assoc, event_type, info):
        LOGGER.info("storage commitment %s reported to %s on the same association", transaction_uid, calling)
        return
    remote = archive.config.remote(calling)
    if remote is None:
        LOGGER.warning(
            "storage commitment %s: %s closed the association and is not a configured remote "
            "(--remote %s=HOST:PORT); result not delivered", transaction_uid, calling, calling,
        )
        return
    ae = assoc.ae
    for attempt in range(1, _NEW_ASSOCIATION_ATTEMPTS + 1):
        report = ae.associate(
            remote.host, remote.port, ae_title=remote.ae_title,
            contexts=[build_context(STORAGE_COMMITMENT_PUSH, list(QUERY_TRANSFER_SYNTAXES))],
            ext_neg=[build_role(STORAGE_COMMITMENT_PUSH, scp_role=True)],
            evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay)],
        )
        if report.is_established:
            try:
                delivered = _report_on(report, event_type, info)
            finally:
                report.release()
            if delivered:
                LOGGER.info("storage commitment %s reported to %s on a new association", transaction_uid, calling)
                return
        LOGGER.warning("storage commitment %s: report to %s failed (attempt %d)", transaction_uid, remote, attempt)
        time.sleep(min(30.0, 2.0**attempt))
    LOGGER.error("storage commitment %s: result not delivered to %s", transaction_uid, calling)


def _release_pending(assoc) -> bool:
    """Whether the requester asks to release within a moment of our N-ACTION response
    (a report sent then would wait for an answer that never comes). Peeks only: the
    reactor still gets the A-RELEASE-RQ."""
    deadline = time.monotonic() + _RELEASE_GRACE
    while True:
        if isinstance(assoc.dul.peek_next_pdu(), A_RELEASE) or not assoc.is_established:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


def _report_on(assoc, event_type: int, info: Dataset) -> bool:
    if not assoc.is_established:
        return False
    if assoc.is_acceptor and _release_pending(assoc):
        return False
    assoc.dimse_timeout = min(assoc.dimse_timeout or _REPORT_TIMEOUT, _REPORT_TIMEOUT)
    try:
        status, _ = assoc.send_n_event_report(info, event_type, STORAGE_COMMITMENT_PUSH, STORAGE_COMMITMENT_INSTANCE)
    except (RuntimeError, ValueError) as exc:  # released meanwhile, or no usable context
        LOGGER.info("storage commitment report on this association not possible: %s", exc)
        return False
    code = getattr(status, "Status", None)
    if code is None:
        return False
    if code != SUCCESS:
        LOGGER.warning("storage commitment report answered with status 0x%04X", code)
    return True
