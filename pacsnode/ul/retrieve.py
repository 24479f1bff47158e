"""C-MOVE and C-GET on the fast path: C-STORE sub-operations from the stored bytes.

C-MOVE opens its own association to the destination (StoreSCU); C-GET sends over the
requester's association on the contexts where it took the SCP role. Each instance goes
out as stored when that syntax was accepted, otherwise converted (services.outgoing).
"""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Protocol

from pydicom.dataset import Dataset

from pacsnode.dicom.codec import encode_dataset
from pacsnode.dicom.status import (
    CANCEL,
    MOVE_DESTINATION_UNKNOWN,
    PENDING,
    SUBOPERATIONS_WITH_FAILURES,
    SUCCESS,
    UNABLE_TO_PERFORM_SUBOPERATIONS,
)
from pacsnode.dicom.uids import PATIENT_ROOT_GET, PATIENT_ROOT_MOVE
from pacsnode.errors import PacsError
from pacsnode.index.base import InstanceRecord
from pacsnode.services.outgoing import dataset_for_peer, proposals_for
from pacsnode.ul import commands
from pacsnode.ul.scu import StoreSCU

if TYPE_CHECKING:
    from pacsnode.ul.association import FastAssociation

LOGGER = logging.getLogger(__name__)
# Instances up to this size are read ahead while the one before is being sent.
_PREFETCH_LIMIT = 64 * 1024 * 1024



class Sender(Protocol):
    def accepted_syntaxes(self, sop_class_uid: str) -> dict[str, int]: ...

    async def store(self, context_id: int, sop_class_uid: str, sop_instance_uid: str, dataset, originator, originator_id) -> int: ...


def _outcome(status: int | None) -> str:
    if status == SUCCESS:
        return "completed"
    if status is not None and (status in (0x0001, 0x0107, 0x0116) or 0xB000 <= status <= 0xBFFF):
        return "warning"
    return "failed"


class Retrieval:
    """One C-MOVE or C-GET request, answered with pending and final responses."""

    def __init__(self, assoc: "FastAssociation", command: commands.Command, context_id: int, syntax: tuple[bool, bool]) -> None:
        self.assoc = assoc
        self.command = command
        self.context_id = context_id
        self.implicit, self.little = syntax
        self.is_move = command.field == commands.C_MOVE_RQ
        self.model_root = "PATIENT" if command.sop_class_uid in (PATIENT_ROOT_MOVE, PATIENT_ROOT_GET) else "STUDY"

    async def run(self, identifier: Dataset) -> tuple[int, str | None, tuple | None, bytes | None]:
        """(final status, comment, sub-operation counts, identifier) for the final response."""
        archive = self.assoc.archive
        op = "C-MOVE" if self.is_move else "C-GET"
        try:
            instances = archive.retrieve.instances(identifier, self.model_root)
        except PacsError as exc:
            LOGGER.warning("%s refused: %s", op, exc)
            return exc.dimse_status, exc.comment, None, None
        if not self.is_move:
            return await self._suboperations(GetSender(self.assoc), instances, None)
        destination = archive.config.remote(self.command.move_destination)
        if destination is None:
            LOGGER.warning("C-MOVE to unknown destination %r refused", self.command.move_destination)
            return MOVE_DESTINATION_UNKNOWN, "move destination unknown", None, None
        if not instances:
            return SUCCESS, None, (None, 0, 0, 0), None
        config = archive.config
        try:
            scu = await StoreSCU.connect(
                destination.host, destination.port, config.ae_title, destination.ae_title,
                proposals_for(instances), config.max_pdu, config.network_timeout,
            )
        except (OSError, asyncio.TimeoutError) as exc:
            LOGGER.warning("C-MOVE: cannot associate with %s: %s", destination.ae_title, exc)
            failed = [i.sop_instance_uid for i in instances]
            counts = (None, 0, len(failed), 0)
            return UNABLE_TO_PERFORM_SUBOPERATIONS, "cannot associate with destination", counts, self._failed_list(failed)
        try:
            return await self._suboperations(scu, instances, config.ae_title)
        finally:
            await scu.release()

    async def _suboperations(self, sender: Sender, instances: list[InstanceRecord], originator: str | None):
        total = len(instances)
        failed: list[str] = []
        completed = warnings = 0
        upcoming = None
        try:
            for n, inst in enumerate(instances):
                if self.command.message_id in self.assoc.cancelled:
                    self.assoc.cancelled.discard(self.command.message_id)
                    rest = [i.sop_instance_uid for i in instances[n:]]
                    return CANCEL, None, (total - n, completed, len(failed), warnings), self._failed_list(failed + rest)
                current = upcoming if upcoming is not None else self._read(inst)
                # The next instance is read while this one travels and the peer answers
                # (unless it is large: two of those in memory at once is too much).
                following = instances[n + 1] if n + 1 < total else None
                upcoming = self._read(following) if following and following.size <= _PREFETCH_LIMIT else None
                result = _outcome(await self._send_one(sender, inst, originator, current))
                if result == "completed":
                    completed += 1
                elif result == "warning":
                    warnings += 1
                else:
                    failed.append(inst.sop_instance_uid)
                if n + 1 < total:
                    counts = (total - n - 1, completed, len(failed), warnings)
                    self.assoc.respond(self.command, self.context_id, PENDING, None, suboperations=counts)
                if not self.assoc.connected:
                    return None, None, None, None
        finally:
            if upcoming is not None:
                upcoming.cancel()
        counts = (None, completed, len(failed), warnings)
        if not failed and not warnings:
            return SUCCESS, None, counts, None
        status = UNABLE_TO_PERFORM_SUBOPERATIONS if len(failed) == total else SUBOPERATIONS_WITH_FAILURES
        return status, None, counts, self._failed_list(failed) if failed else None

    def _read(self, inst: InstanceRecord) -> asyncio.Future:
        """The instance's Part 10 bytes, read in a thread."""
        return asyncio.get_running_loop().run_in_executor(None, self.assoc.archive.blobs.read, inst.blob_id)

    async def _send_one(
        self, sender: Sender, inst: InstanceRecord, originator: str | None, part10: asyncio.Future
    ) -> int | None:
        accepted = sender.accepted_syntaxes(inst.sop_class_uid)
        if not accepted:
            LOGGER.warning("retrieve: the peer accepted no context for SOP class %s", inst.sop_class_uid)
            part10.cancel()
            return None
        try:
            syntax, dataset = dataset_for_peer(await part10, inst.transfer_syntax, accepted)
            return await sender.store(
                accepted[syntax], inst.sop_class_uid, inst.sop_instance_uid, dataset, originator, self.command.message_id
            )
        except Exception as exc:  # one failed sub-operation, reported in the final response
            LOGGER.warning("retrieve: sending %s failed: %s", inst.sop_instance_uid, exc)
            return None

    def _failed_list(self, uids: list[str]) -> bytes:
        ds = Dataset()
        ds.FailedSOPInstanceUIDList = uids
        return encode_dataset(ds, self.implicit, self.little)


class GetSender:
    """C-STOREs over the C-GET requester's own association."""

    def __init__(self, assoc: "FastAssociation") -> None:
        self.assoc = assoc
        self._accepted: dict[str, dict[str, int]] = {}

    def accepted_syntaxes(self, sop_class_uid: str) -> dict[str, int]:
        # Asked once per instance; a C-GET requester proposes a hundred contexts or more.
        accepted = self._accepted.get(sop_class_uid)
        if accepted is None:
            accepted = self._accepted[sop_class_uid] = {
                ts: cx
                for cx, (abstract, ts) in self.assoc.contexts.items()
                if abstract == sop_class_uid and cx in self.assoc.scu_contexts
            }
        return accepted

    async def store(self, context_id, sop_class_uid, sop_instance_uid, dataset, originator, originator_id) -> int | None:
        return await self.assoc.send_store(context_id, sop_class_uid, sop_instance_uid, dataset)
