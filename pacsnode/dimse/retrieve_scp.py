"""C-MOVE and C-GET as a service class of our own, so stored files go out untouched.

pynetdicom's own retrieve SCP re-encodes every instance from a pydicom Dataset. This class
keeps pynetdicom's negotiation, DIMSE messaging and C-CANCEL handling, and replaces the
sub-operation loop: each instance is sent as stored when the peer accepted its transfer
syntax (no decode), otherwise converted (services.outgoing). The fast path (pacsnode.ul)
serves most retrieves; this class serves associations that also need pynetdicom.
"""
from __future__ import annotations

import logging
import time
from io import BytesIO
from typing import TYPE_CHECKING

import pynetdicom.association
from pydicom import Dataset
from pynetdicom import build_context, evt
from pynetdicom.dimse_primitives import C_GET, C_MOVE, C_STORE
from pynetdicom.dsutils import decode, encode
from pynetdicom.service_class import QueryRetrieveServiceClass
from pynetdicom.sop_class import uid_to_service_class

from pacsnode.dicom.status import (
    CANCEL,
    MOVE_DESTINATION_UNKNOWN,
    PENDING,
    SUBOPERATIONS_WITH_FAILURES,
    SUCCESS,
    UNABLE_TO_PERFORM_SUBOPERATIONS,
    UNABLE_TO_PROCESS,
)
from pacsnode.dicom.uids import (
    PATIENT_ROOT_GET,
    PATIENT_ROOT_MOVE,
    QR_MODELS,
)
from pacsnode.dimse.sockets import set_nodelay
from pacsnode.errors import PacsError
from pacsnode.services.outgoing import dataset_for_peer, proposals_for

if TYPE_CHECKING:
    from pynetdicom.association import Association
    from pynetdicom.presentation import PresentationContext

    from pacsnode.index.base import InstanceRecord

LOGGER = logging.getLogger(__name__)

_RETRIEVE_MODELS = {uid for uid, (_, op) in QR_MODELS.items() if op in ("C-MOVE", "C-GET")}


class RetrieveServiceClass(QueryRetrieveServiceClass):
    def _move_scp(self, req: C_MOVE, context: "PresentationContext") -> None:
        rsp = C_MOVE()
        self._run(req, rsp, context, is_move=True)

    def _get_scp(self, req: C_GET, context: "PresentationContext") -> None:
        rsp = C_GET()
        self._run(req, rsp, context, is_move=False)

    def _run(self, req: C_MOVE | C_GET, rsp: C_MOVE | C_GET, context: "PresentationContext", is_move: bool) -> None:
        rsp.MessageIDBeingRespondedTo = req.MessageID
        rsp.AffectedSOPClassUID = req.AffectedSOPClassUID
        cx_id = context.context_id
        ts = context.transfer_syntax[0]
        archive = self.ae.archive
        model_root = "PATIENT" if req.AffectedSOPClassUID in (PATIENT_ROOT_MOVE, PATIENT_ROOT_GET) else "STUDY"
        op = "C-MOVE" if is_move else "C-GET"
        try:
            identifier = decode(req.Identifier, ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated)
            instances = archive.retrieve.instances(identifier, model_root)
        except PacsError as exc:
            LOGGER.warning("%s refused: %s", op, exc)
            return self._final(rsp, cx_id, exc.dimse_status, comment=exc.comment)
        except Exception:
            LOGGER.exception("%s: cannot process the identifier", op)
            return self._final(rsp, cx_id, UNABLE_TO_PROCESS, comment="cannot process the identifier")

        store_assoc = self.assoc
        if is_move:
            destination = archive.config.remote(req.MoveDestination or "")
            if destination is None:
                LOGGER.warning("C-MOVE to unknown destination %r refused", req.MoveDestination)
                return self._final(rsp, cx_id, MOVE_DESTINATION_UNKNOWN, comment="move destination unknown")
            if not instances:
                return self._final(rsp, cx_id, SUCCESS, counts=(0, 0, 0))
            store_assoc = self.ae.associate(
                destination.host,
                destination.port,
                contexts=[build_context(c, ts) for c, ts in proposals_for(instances)],
                ae_title=destination.ae_title,
                evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay)],
            )
            if not store_assoc.is_established:
                LOGGER.warning("C-MOVE: cannot associate with %s", destination)
                return self._final(
                    rsp, cx_id, UNABLE_TO_PERFORM_SUBOPERATIONS, counts=(len(instances), 0, 0),  # (failed, warning, completed)
                    failed=[i.sop_instance_uid for i in instances], comment="cannot associate with destination",
                )
        try:
            self._suboperations(req, rsp, cx_id, ts, store_assoc, instances, is_move)
        finally:
            if is_move and store_assoc.is_established:
                store_assoc.release()

    def _suboperations(self, req, rsp, cx_id, ts, store_assoc: "Association", instances: list, is_move: bool) -> None:
        total = len(instances)
        failed: list[str] = []
        warnings = completed = 0
        originator = self.ae.ae_title if is_move else None
        for n, inst in enumerate(instances):
            if self.is_cancelled(req.MessageID):
                LOGGER.info("retrieve cancelled after %d of %d sub-operations", n, total)
                return self._final(
                    rsp, cx_id, CANCEL, counts=(len(failed), warnings, completed), remaining=total - n,
                    failed=failed + [i.sop_instance_uid for i in instances[n:]], ts=ts,
                )
            if not self.assoc.is_established:
                return
            result = _send_one(store_assoc, self.ae, inst, (req.MessageID + n + 1) % 65536, originator, req.MessageID)
            if result == "failure":
                failed.append(inst.sop_instance_uid)
            elif result == "warning":
                warnings += 1
            else:
                completed += 1
            if n + 1 < total:
                rsp.Status = PENDING
                rsp.Identifier = None
                rsp.NumberOfRemainingSuboperations = total - n - 1
                rsp.NumberOfFailedSuboperations = len(failed)
                rsp.NumberOfWarningSuboperations = warnings
                rsp.NumberOfCompletedSuboperations = completed
                self.dimse.send_msg(rsp, cx_id)
        if not failed and not warnings:
            code = SUCCESS
        elif len(failed) == total:
            code = UNABLE_TO_PERFORM_SUBOPERATIONS
        else:
            code = SUBOPERATIONS_WITH_FAILURES
        self._final(rsp, cx_id, code, counts=(len(failed), warnings, completed), failed=failed, ts=ts)

    def _final(
        self, rsp, cx_id: int, code: int, counts: tuple[int, int, int] | None = None, remaining: int | None = None,
        failed: list[str] | None = None, comment: str | None = None, ts=None,
    ) -> None:
        rsp.Status = code
        rsp.NumberOfRemainingSuboperations = remaining
        if counts is not None:
            rsp.NumberOfFailedSuboperations, rsp.NumberOfWarningSuboperations, rsp.NumberOfCompletedSuboperations = counts
        if comment:
            rsp.ErrorComment = comment[:64]
        rsp.Identifier = None
        if failed:
            ds = Dataset()
            ds.FailedSOPInstanceUIDList = failed
            ts = ts or self.assoc._accepted_cx[cx_id].transfer_syntax[0]
            rsp.Identifier = BytesIO(encode(ds, ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated))
        self.dimse.send_msg(rsp, cx_id)


def _send_one(assoc: "Association", ae, inst: "InstanceRecord", msg_id: int, originator: str | None, originator_id: int) -> str:
    """C-STORE one instance; returns 'success', 'warning' or 'failure'."""
    try:
        # Contexts on which we may send this SOP class: any we proposed (C-MOVE), or those
        # where the C-GET requester took the SCP role.
        contexts = {
            str(cx.transfer_syntax[0]): cx
            for cx in assoc.accepted_contexts
            if cx.abstract_syntax == inst.sop_class_uid and (assoc.is_requestor or cx.as_scu)
        }
        part10 = ae.archive.blobs.read(inst.blob_id)
        syntax, dataset = dataset_for_peer(part10, inst.transfer_syntax, contexts)
        status = send_encoded(assoc, contexts[syntax], inst, dataset, msg_id or 1, originator, originator_id)
    except Exception as exc:
        LOGGER.warning("C-STORE sub-operation for %s failed: %s", inst.sop_instance_uid, exc)
        return "failure"
    code = getattr(status, "Status", None)
    if code is None:
        return "failure"
    if code == SUCCESS:
        return "success"
    if code in (0x0001, 0x0107, 0x0116) or 0xB000 <= code <= 0xBFFF:
        return "warning"
    return "failure"


def send_encoded(
    assoc: "Association", context, inst: "InstanceRecord", dataset, msg_id: int, originator: str | None, originator_id: int
) -> Dataset:
    """C-STORE an encoded dataset on an accepted context: the tail of pynetdicom's
    ``Association.send_c_store`` after its encode step (pinned pynetdicom version)."""
    req = C_STORE()
    req.MessageID = msg_id
    req.Priority = 2
    req.AffectedSOPClassUID = inst.sop_class_uid
    req.AffectedSOPInstanceUID = inst.sop_instance_uid
    if originator:
        req.MoveOriginatorApplicationEntityTitle = originator
        req.MoveOriginatorMessageID = originator_id
    req.DataSet = BytesIO(dataset)
    # Pause the acceptor reactor (as send_c_store does) so it cannot take our response.
    assoc._reactor_checkpoint.clear()
    while not assoc._is_paused:
        time.sleep(0.0001)
    try:
        assoc.dimse.send_msg(req, context.context_id)
        _, rsp = assoc.dimse.get_msg(block=True)
    finally:
        assoc._reactor_checkpoint.set()
    if rsp is None:
        assoc._handle_no_response()
        return Dataset()
    return assoc._check_received_status(rsp)


_original_lookup = uid_to_service_class


def _lookup(uid: str):
    if uid in _RETRIEVE_MODELS:
        return RetrieveServiceClass
    return _original_lookup(uid)


def install() -> None:
    """Route C-MOVE/C-GET models to RetrieveServiceClass (pynetdicom resolves service
    classes through this module-level name; pinned pynetdicom version in pyproject)."""
    pynetdicom.association.uid_to_service_class = _lookup
