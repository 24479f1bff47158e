"""The archive as an SCU toward the RIS and other subscribers (in the coordinator process):
the outbox (MPPS forwarded, Instance Availability Notifications) and worklist look-ups.

Each destination's messages go out in the order they were queued, several per association;
a destination that cannot be reached is retried with doubling backoff and nothing overtakes
its oldest message. A message the peer refuses (a failure status) is logged and dropped, so
one bad message cannot stop the queue.
"""
from __future__ import annotations

import logging
import time

from pydicom import Dataset
from pydicom.sequence import Sequence
from pynetdicom import AE, evt

from pacsnode.config import Remote
from pacsnode.dicom.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, QUERY_TRANSFER_SYNTAXES
from pacsnode.dimse.sockets import set_nodelay
from pacsnode.services.completion import IAN_SOP_CLASS
from pacsnode.services.mpps import MPPS_SOP_CLASS, decoded

LOGGER = logging.getLogger(__name__)

MODALITY_WORKLIST_FIND = "1.2.840.10008.5.1.4.31"
_RETRY_INITIAL, _RETRY_MAX = 1.0, 60.0
_PER_ASSOCIATION = 100
# Return keys of a worklist look-up: the identity an instance is checked against.
_WORKLIST_KEYS = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "RequestedProcedureID")


def build_scu(config) -> AE:
    ae = AE(ae_title=config.ae_title)
    ae.implementation_class_uid = IMPLEMENTATION_CLASS_UID
    ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    ae.network_timeout = ae.dimse_timeout = 30
    ae.acse_timeout = 10
    for uid in (MPPS_SOP_CLASS, IAN_SOP_CLASS, MODALITY_WORKLIST_FIND):
        ae.add_requested_context(uid, list(QUERY_TRANSFER_SYNTAXES))
    return ae


def _remote(text: str) -> Remote:
    return Remote.parse(text)


class OutboxSender:
    def __init__(self, archive, ae: AE) -> None:
        self.archive = archive
        self.tables = archive.tables
        self.ae = ae
        self._retry: dict[str, tuple[float, float]] = {}  # destination -> (next attempt, delay)

    def send_pending(self) -> int:
        """Send what is due; returns the number of messages answered."""
        with self.tables.read() as tx:
            queued = list(tx.items("outbox"))
        by_destination: dict[str, list[tuple[str, dict]]] = {}
        for key, message in queued:
            by_destination.setdefault(key.rsplit("/", 1)[0], []).append((key, message))
        done = 0
        now = time.monotonic()
        for destination, messages in by_destination.items():
            due, delay = self._retry.get(destination, (0.0, 0.0))
            if now < due:
                continue
            sent, error = self._send(_remote(messages[0][1]["to"]), messages[:_PER_ASSOCIATION])
            done += sent
            if error:
                delay = min(_RETRY_MAX, max(_RETRY_INITIAL, delay * 2))
                self._retry[destination] = (time.monotonic() + delay, delay)
                LOGGER.warning("outbox to %s: %s (retry in %.0fs, %d queued)", destination, error, delay, len(messages) - sent)
            else:
                self._retry.pop(destination, None)
        return done

    def _send(self, remote: Remote, messages: list[tuple[str, dict]]) -> tuple[int, str]:
        assoc = self.ae.associate(remote.host, remote.port, ae_title=remote.ae_title, evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay)])
        if not assoc.is_established:
            return 0, "cannot associate"
        sent = 0
        try:
            for key, message in messages:
                ds = decoded(message["ds"])
                try:
                    if message["op"] == "N-CREATE":
                        status, _ = assoc.send_n_create(ds, message["class"], message["instance"])
                    else:
                        status, _ = assoc.send_n_set(ds, message["class"], message["instance"])
                except (RuntimeError, ValueError) as exc:  # no accepted context for the class
                    LOGGER.error("outbox: %s %s to %s not possible (%s); dropped", message["op"], message["note"], remote.ae_title, exc)
                    self._drop(key)
                    continue
                code = getattr(status, "Status", None)
                if code is None:
                    return sent, "no answer"
                if code != 0x0000 and not 0xB000 <= code <= 0xBFFF and code not in (0x0001, 0x0107, 0x0116):
                    LOGGER.error("outbox: %s refused by %s with status 0x%04X (%s); dropped",
                                  message["note"], remote.ae_title, code, getattr(status, "ErrorComment", ""))
                else:
                    LOGGER.info("outbox: %s %s delivered to %s", message["op"], message["note"], remote.ae_title)
                self._drop(key)
                sent += 1
        finally:
            if assoc.is_established:
                assoc.release()
        return sent, ""

    def _drop(self, key: str) -> None:
        with self.tables.write() as tx:
            tx.delete("outbox", key)


def worklist_find(ae: AE, remote: Remote, accession: str) -> list[Dataset] | None:
    """The worklist entries for one accession number; None when the RIS cannot be asked."""
    query = Dataset()
    query.AccessionNumber = accession
    for key in _WORKLIST_KEYS:
        setattr(query, key, "")
    step = Dataset()
    step.Modality = ""
    step.ScheduledProcedureStepID = ""
    query.ScheduledProcedureStepSequence = Sequence([step])
    assoc = ae.associate(remote.host, remote.port, ae_title=remote.ae_title, evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay)])
    if not assoc.is_established:
        return None
    found = []
    try:
        for status, identifier in assoc.send_c_find(query, MODALITY_WORKLIST_FIND):
            code = getattr(status, "Status", None)
            if code is None:
                return None
            if code in (0xFF00, 0xFF01) and identifier is not None:
                found.append(identifier)
    finally:
        if assoc.is_established:
            assoc.release()
    return found
