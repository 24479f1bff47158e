"""C-MOVE and C-GET on the fast path: C-STORE sub-operations from the stored bytes.

C-MOVE opens its own association to the destination (StoreSCU), or several at once when the
destination is configured with ``;associations=N``, each sending the next instance as soon as
it is free; C-GET sends over the requester's association on the contexts where it took the
SCP role. Each instance goes out as stored when that syntax was accepted, otherwise
converted (services.outgoing).
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from pydicom.dataset import Dataset

from pacsnode.config import Remote
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
from pacsnode.services.outgoing import dataset_for_peer, proposals_for, stored_dataset
from pacsnode.ul import commands
from pacsnode.ul.scu import StoreSCU

if TYPE_CHECKING:
    from pacsnode.ul.association import FastAssociation

LOGGER = logging.getLogger(__name__)
# Instances up to this size (shared among a C-MOVE's associations) are read ahead while the
# one before is being sent.
_PREFETCH_LIMIT = 64 * 1024 * 1024


class Sender(Protocol):
    alive: bool

    def accepted_syntaxes(self, sop_class_uid: str) -> dict[str, int]: ...

    async def store(self, context_id: int, sop_class_uid: str, sop_instance_uid: str, dataset, originator, originator_id) -> int: ...


def _outcome(status: int | None) -> str:
    if status == SUCCESS:
        return "completed"
    if status is not None and (status in (0x0001, 0x0107, 0x0116) or 0xB000 <= status <= 0xBFFF):
        return "warning"
    return "failed"


@dataclass
class _Progress:
    """What the senders of one retrieval share: the instances none has taken, and the outcomes."""

    unsent: deque[InstanceRecord]
    total: int
    read_ahead_limit: int
    completed: int = 0
    warnings: int = 0
    failed: list[str] = field(default_factory=list)
    cancelled: bool = False

    @property
    def remaining(self) -> int:
        return self.total - self.completed - self.warnings - len(self.failed)

    def counts(self, remaining: int | None) -> tuple[int | None, int, int, int]:
        return remaining, self.completed, len(self.failed), self.warnings

    def record(self, inst: InstanceRecord, status: int | None) -> None:
        outcome = _outcome(status)
        if outcome == "completed":
            self.completed += 1
        elif outcome == "warning":
            self.warnings += 1
        else:
            self.failed.append(inst.sop_instance_uid)


async def _release(scus: list[StoreSCU]) -> None:
    await asyncio.gather(*(scu.release() for scu in scus))


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
            return await self._suboperations([GetSender(self.assoc)], instances, None)
        destination = archive.config.remote(self.command.move_destination)
        if destination is None:
            LOGGER.warning("C-MOVE to unknown destination %r refused", self.command.move_destination)
            return MOVE_DESTINATION_UNKNOWN, "move destination unknown", None, None
        if not instances:
            return SUCCESS, None, (None, 0, 0, 0), None
        scus = await self._associate(destination, instances)
        if not scus:
            failed = [i.sop_instance_uid for i in instances]
            counts = (None, 0, len(failed), 0)
            return UNABLE_TO_PERFORM_SUBOPERATIONS, "cannot associate with destination", counts, self._failed_list(failed)
        try:
            return await self._suboperations(scus, instances, archive.config.ae_title)
        finally:
            await _release(scus)

    async def _associate(self, destination: Remote, instances: list[InstanceRecord]) -> list[StoreSCU]:
        """The associations with the destination that opened, of as many as it is configured
        for (one per instance at most), requested at once."""
        config = self.assoc.archive.config
        proposals = proposals_for(instances)
        wanted = min(destination.associations, len(instances))
        results = await asyncio.gather(
            *(
                StoreSCU.connect(
                    destination.host, destination.port, config.ae_title, destination.ae_title,
                    proposals, config.max_pdu, config.network_timeout,
                )
                for _ in range(wanted)
            ),
            return_exceptions=True,
        )
        scus = [r for r in results if isinstance(r, StoreSCU)]
        errors = [r for r in results if not isinstance(r, StoreSCU)]
        unexpected = next((e for e in errors if not isinstance(e, (OSError, asyncio.TimeoutError))), None)
        if unexpected is not None:
            await _release(scus)
            raise unexpected
        if errors and scus:
            LOGGER.warning(
                "C-MOVE: %d of %d associations with %s opened, sending over those: %s",
                len(scus), wanted, destination.ae_title, errors[0],
            )
        elif errors:
            LOGGER.warning("C-MOVE: cannot associate with %s: %s", destination.ae_title, errors[0])
        return scus

    async def _suboperations(self, senders: list[Sender], instances: list[InstanceRecord], originator: str | None):
        """One task per sender, each taking the next instance when it is free."""
        progress = _Progress(deque(instances), len(instances), _PREFETCH_LIMIT // len(senders))
        # A task group: a sender that fails unexpectedly stops the others.
        async with asyncio.TaskGroup() as group:
            for sender in senders:
                group.create_task(self._send_all(sender, progress, originator))
        if not self.assoc.connected:
            return None, None, None, None
        failed = progress.failed
        unsent = [i.sop_instance_uid for i in progress.unsent]
        if progress.cancelled:
            return CANCEL, None, progress.counts(len(unsent)), self._failed_list(failed + unsent)
        if unsent:
            LOGGER.warning("retrieve: every association with the destination ended; %d instances not sent", len(unsent))
            failed += unsent
        counts = progress.counts(None)
        if not failed and not progress.warnings:
            return SUCCESS, None, counts, None
        status = UNABLE_TO_PERFORM_SUBOPERATIONS if len(failed) == progress.total else SUBOPERATIONS_WITH_FAILURES
        return status, None, counts, self._failed_list(failed) if failed else None

    async def _send_all(self, sender: Sender, progress: _Progress, originator: str | None) -> None:
        """Send the next unsent instance until none is left or the requester cancels or leaves."""
        upcoming: tuple[InstanceRecord, asyncio.Future] | None = None
        try:
            while upcoming or progress.unsent:
                if self._stopping(progress) or not sender.alive:
                    return
                inst, part10 = upcoming or self._take(progress)
                upcoming = self._read_ahead(progress)
                progress.record(inst, await self._send_one(sender, inst, originator, part10))
                if progress.remaining:
                    counts = progress.counts(progress.remaining)
                    self.assoc.respond(self.command, self.context_id, PENDING, None, suboperations=counts)
        finally:
            if upcoming is not None:  # taken but not sent: it is still unsent
                upcoming[1].cancel()
                progress.unsent.appendleft(upcoming[0])

    def _stopping(self, progress: _Progress) -> bool:
        """Whether the requester cancelled (C-CANCEL) or left; what one sender sees, all see."""
        if self.command.message_id in self.assoc.cancelled:
            self.assoc.cancelled.discard(self.command.message_id)
            progress.cancelled = True
        return progress.cancelled or not self.assoc.connected

    def _read_ahead(self, progress: _Progress) -> tuple[InstanceRecord, asyncio.Future] | None:
        """The next instance, taken and read while the current one travels and the peer answers
        (unless it is large: two of those in memory at once is too much)."""
        if progress.unsent and progress.unsent[0].size <= progress.read_ahead_limit:
            return self._take(progress)
        return None

    def _take(self, progress: _Progress) -> tuple[InstanceRecord, asyncio.Future]:
        inst = progress.unsent.popleft()
        return inst, self._read(inst)

    def _read(self, inst: InstanceRecord) -> asyncio.Future:
        """The instance's Part 10 bytes (or, a large one, where its dataset lies), in a thread."""
        return asyncio.get_running_loop().run_in_executor(None, stored_dataset, self.assoc.archive.blobs, inst)

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

    @property
    def alive(self) -> bool:
        return self.assoc.connected

    async def store(self, context_id, sop_class_uid, sop_instance_uid, dataset, originator, originator_id) -> int | None:
        return await self.assoc.send_store(context_id, sop_class_uid, sop_instance_uid, dataset)
