"""The fast-path association: Verification, Storage and Query (C-FIND) SCP on asyncio.

Data phase per PS3.8 and PS3.7: P-DATA-TF PDUs are split into PDVs; a command set and
its dataset are gathered; each instance is scanned, handed to the group committer, and
answered once it is durable; queries are answered from the index as a stream that
C-CANCEL stops. Large datasets are spooled to a file as they arrive.
"""
from __future__ import annotations

import asyncio
import logging
import mmap
import socket
import time
from dataclasses import dataclass

from pacsnode.dicom.codec import decode_dataset
from pacsnode.dicom.status import (
    CANCEL,
    CANNOT_UNDERSTAND,
    OUT_OF_RESOURCES,
    PENDING,
    SUCCESS,
    UNABLE_TO_PROCESS,
    UNRECOGNIZED_OPERATION,
)
from pacsnode.dicom.syntax import encoding_of, inflated
from pacsnode.dicom.uids import PATIENT_ROOT_FIND, VERIFICATION
from pacsnode.errors import MalformedDatasetError, PacsError
from pacsnode.services.archive import Archive
from pacsnode.services.store import DUPLICATE, PendingInstance
from pacsnode.ul import commands, pdu
from pacsnode.ul.acse import Supported, negotiate, parse_associate_rq
from pacsnode.ul.retrieve import Retrieval
from pacsnode.ul.spool import IncomingDataset
from pacsnode.ul.stream import write_message

LOGGER = logging.getLogger("pacsnode.association")

_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only
# Let other associations (and this one's C-CANCEL) in after this many C-FIND responses.
_FIND_YIELD_EVERY = 32
_WITH_DATASET = (commands.C_STORE_RQ, commands.C_FIND_RQ, commands.C_MOVE_RQ, commands.C_GET_RQ)


@dataclass(frozen=True)
class FastPathContext:
    archive: Archive
    supported: dict[str, Supported]
    max_pdu: int
    idle_timeout: float


class FastAssociation(asyncio.BufferedProtocol):
    def __init__(self, ctx: FastPathContext, sock: socket.socket) -> None:
        self.ctx = ctx
        self.archive = ctx.archive
        self.transport: asyncio.Transport | None = None
        # The accepted socket itself (the transport owns and closes it), for TCP_QUICKACK:
        # uvloop's get_extra_info("socket") builds a new socket object on every call to it.
        self.sock = sock
        self.head = bytearray(6)  # the next PDU's header, as it arrives
        self.head_filled = 0
        self.pdu: bytearray | None = None  # the PDU being received, header included
        self.pdu_filled = 0
        self.established = False
        self.calling = ""
        self.peer = ("?", 0)
        self.contexts: dict[int, tuple[str, str]] = {}
        self.peer_max_pdu = 0
        self.command_parts: list[bytes] = []
        self.command_context = 0
        self.dataset: IncomingDataset | None = None
        self.queue: asyncio.Queue = asyncio.Queue()
        self.worker: asyncio.Task | None = None
        self.cancelled: set[int] = set()
        self.scu_contexts: frozenset[int] = frozenset()
        # C-GET: our C-STORE sub-operation awaiting its response, by Message ID.
        self.store_responses: dict[int, asyncio.Future] = {}
        self.next_message_id = 0
        self.can_write = asyncio.Event()
        self.can_write.set()
        self.stats = {"stored": 0, "dup": 0, "failed": 0, "find": 0}
        self.started = time.monotonic()
        self.last_activity = time.monotonic()
        self.ended = "aborted"
        self._idle_handle: asyncio.TimerHandle | None = None
        self.on_closed = lambda: None  # set by the dispatcher, which tracks open associations

    # -- transport callbacks -------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.peer = transport.get_extra_info("peername") or ("?", 0)
        self._idle_handle = asyncio.get_running_loop().call_later(self.ctx.idle_timeout, self._check_idle)

    # Reads go straight into the PDU they belong to (BufferedProtocol): first its 6-byte
    # header, then the whole PDU, sized from it. A dataset's fragments are views of those PDUs:
    # nothing received is copied before the dataset is gathered.

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.pdu is None:
            return memoryview(self.head)[self.head_filled :]
        return memoryview(self.pdu)[self.pdu_filled :]

    def buffer_updated(self, nbytes: int) -> None:
        self.last_activity = time.monotonic()
        if _QUICKACK is not None:
            # ACK every read at once: a sender with Nagle's algorithm on (DCMTK as installed)
            # holds its next segment until the last one is acknowledged, ~40 ms otherwise.
            self.sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        try:
            if self.pdu is None:
                self.head_filled += nbytes
                if self.head_filled < 6:
                    return
                self.pdu = bytearray(self._pdu_length(self.head))
                self.pdu[:6] = self.head
                self.head_filled, self.pdu_filled = 0, 6
            else:
                self.pdu_filled += nbytes
            if self.pdu_filled == len(self.pdu):
                whole, self.pdu = self.pdu, None
                self._on_pdu(whole[0], memoryview(whole))
        except pdu.ProtocolError as exc:
            self._abort(f"protocol error: {exc}", exc.reason)
        except Exception:
            LOGGER.exception("association %s: unexpected error", self.calling)
            self._abort("internal error", pdu.REASON_NOT_SPECIFIED)

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.on_closed()
        self.can_write.set()
        for waiter in self.store_responses.values():
            if not waiter.done():
                waiter.set_result(None)
        if self._idle_handle is not None:
            self._idle_handle.cancel()
        if self.dataset is not None:
            self.dataset.discard()
        if self.worker is not None:
            self.queue.put_nowait(None)  # let in-flight stores finish, then stop
        if self.established:
            st = self.stats
            LOGGER.info(
                "association %s (%s:%s) %s after %.2fs: stored %d, duplicate %d, failed %d, queries %d",
                self.calling,
                self.peer[0],
                self.peer[1],
                self.ended,
                time.monotonic() - self.started,
                st["stored"],
                st["dup"],
                st["failed"],
                st["find"],
            )

    def _check_idle(self) -> None:
        idle = time.monotonic() - self.last_activity
        if idle >= self.ctx.idle_timeout and self.queue.empty():
            self._abort("idle timeout", pdu.REASON_NOT_SPECIFIED)
        else:
            self._idle_handle = asyncio.get_running_loop().call_later(self.ctx.idle_timeout, self._check_idle)

    # -- PDUs ----------------------------------------------------------------------------

    def _pdu_length(self, head) -> int:
        """The whole length of the PDU that ``head`` (at least 6 bytes) begins."""
        _, length = pdu.PDU_HEADER.unpack_from(head)
        if length > 2 * self.ctx.max_pdu + 6:
            raise pdu.ProtocolError(f"PDU of {length} bytes exceeds the maximum we announced")
        return 6 + length

    def _on_pdu(self, pdu_type: int, whole: memoryview) -> None:
        if not self.established:
            if pdu_type != pdu.A_ASSOCIATE_RQ:
                raise pdu.ProtocolError("expected A-ASSOCIATE-RQ", pdu.REASON_UNEXPECTED_PDU)
            return self._on_associate(bytes(whole))
        if pdu_type == pdu.P_DATA_TF:
            for context_id, is_command, last, fragment in pdu.iter_pdvs(whole[6:]):
                self._on_pdv(context_id, is_command, last, fragment)
        elif pdu_type == pdu.A_RELEASE_RQ:
            self.queue.put_nowait("release")
        elif pdu_type == pdu.A_ABORT:
            self.ended = "aborted by peer"
            self.transport.close()
        elif pdu_type in (pdu.A_ASSOCIATE_RQ, pdu.A_ASSOCIATE_AC, pdu.A_ASSOCIATE_RJ, pdu.A_RELEASE_RP):
            raise pdu.ProtocolError(f"unexpected PDU type {pdu_type:#04x}", pdu.REASON_UNEXPECTED_PDU)
        else:
            raise pdu.ProtocolError(f"unrecognized PDU type {pdu_type:#04x}", pdu.REASON_UNRECOGNIZED_PDU)

    def _on_associate(self, raw: bytes) -> None:
        result = negotiate(parse_associate_rq(raw), self.archive.config.ae_title, self.ctx.supported, self.ctx.max_pdu)
        self.calling = result.calling_ae_title
        self.transport.write(result.reply)
        if not result.accepted:
            LOGGER.warning(
                "association from %s (%s:%s) to %s rejected", self.calling, self.peer[0], self.peer[1], result.called_ae_title
            )
            self.transport.close()
            return
        self.established = True
        self.contexts = result.contexts
        self.scu_contexts = result.scu_contexts
        self.peer_max_pdu = result.peer_max_pdu
        self.worker = asyncio.get_running_loop().create_task(self._serve())

    def _on_pdv(self, context_id: int, is_command: bool, last: bool, fragment: memoryview) -> None:
        if context_id not in self.contexts:
            raise pdu.ProtocolError(f"PDV on presentation context {context_id}, which was not accepted")
        if is_command:
            if self.dataset is not None:
                raise pdu.ProtocolError("command fragment while a dataset was expected", pdu.REASON_UNEXPECTED_PDU)
            self.command_parts.append(bytes(fragment))
            if last:
                self._on_command(context_id, b"".join(self.command_parts))
                self.command_parts = []
            return
        if self.dataset is None or context_id != self.command_context:
            raise pdu.ProtocolError("dataset fragment without its command", pdu.REASON_UNEXPECTED_PDU)
        self.dataset.add(fragment)
        if last:
            self.queue.put_nowait((self.dataset.command, self.command_context, self.dataset))
            self.dataset = None

    def _on_command(self, context_id: int, raw: bytes) -> None:
        try:
            command = commands.decode_command(raw)
        except (MalformedDatasetError, ValueError) as exc:
            raise pdu.ProtocolError(f"bad command set: {exc}") from exc
        if command.field == commands.C_CANCEL_RQ:
            # Acted on at once: the request it cancels is still streaming responses.
            self.cancelled.add(command.responding_to)
        elif command.field == commands.C_STORE_RQ | 0x8000:
            waiter = self.store_responses.pop(command.responding_to, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(command.status)
            else:
                LOGGER.warning("association %s: C-STORE-RSP to no request of ours", self.calling)
        elif command.has_dataset:
            if command.field not in _WITH_DATASET:
                raise pdu.ProtocolError(f"command {command.field:#06x} with a dataset on the fast path")
            self.command_context = context_id
            self.dataset = IncomingDataset(self.archive, command, self.contexts[context_id][1], self.calling)
        else:
            self.queue.put_nowait((command, context_id, None))

    def _abort(self, why: str, reason: int) -> None:
        LOGGER.warning("association %s (%s:%s): %s; aborting", self.calling, self.peer[0], self.peer[1], why)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(pdu.abort_pdu(pdu.SOURCE_PROVIDER, reason))
            self.transport.close()

    # -- DIMSE ---------------------------------------------------------------------------

    async def _serve(self) -> None:
        """Answer messages in arrival order (no asynchronous operations are negotiated)."""
        while True:
            item = await self.queue.get()
            if item is None:
                return
            if item == "release":
                self.ended = "released"
                if not self.transport.is_closing():
                    self.transport.write(pdu.RELEASE_RP)
                    self.transport.close()
                return
            command, context_id, dataset = item
            held: list[bytes] = []
            if command.field == commands.C_STORE_RQ and dataset is not None:
                status, comment = await self._store(command, dataset)
            elif command.field == commands.C_FIND_RQ and dataset is not None:
                status, comment = await self._find(command, context_id, dataset, held)
            elif command.field in (commands.C_MOVE_RQ, commands.C_GET_RQ) and dataset is not None:
                await self._retrieve(command, context_id, dataset)
                continue
            elif command.field == commands.C_ECHO_RQ:
                status, comment = SUCCESS, None
            else:
                status, comment = UNRECOGNIZED_OPERATION, "operation not supported on this association"
            self.respond(command, context_id, status, comment, held=held)
            self._flush(held)

    def respond(
        self,
        command: commands.Command,
        context_id: int,
        status: int,
        comment: str | None,
        identifier: bytes | None = None,
        held: list[bytes] | None = None,
        suboperations: tuple | None = None,
    ) -> None:
        """Add a response's PDUs to ``held`` (sent later in one write), or send it now."""
        if not self.connected:
            return
        sop_class = command.sop_class_uid or (VERIFICATION if command.field == commands.C_ECHO_RQ else "")
        rsp = commands.encode_response(
            command.field, command.message_id, status, sop_class, command.sop_instance_uid, comment,
            identifier is not None, suboperations,
        )
        pdus = pdu.p_data_message(context_id, rsp, identifier, self.peer_max_pdu)
        if held is not None:
            held.extend(pdus)
        else:
            self.transport.write(b"".join(pdus))

    async def _store(self, command: commands.Command, dataset: IncomingDataset) -> tuple[int, str | None]:
        try:
            pending = self._prepare(command, dataset)
            outcome = await asyncio.wrap_future(self.archive.committer.submit(pending))
        except PacsError as exc:
            dataset.discard()
            self.stats["failed"] += 1
            LOGGER.warning("C-STORE %s from %s refused: %s", command.sop_instance_uid, self.calling, exc)
            return exc.dimse_status, exc.comment
        except OSError as exc:
            dataset.discard()
            self.stats["failed"] += 1
            LOGGER.error("C-STORE %s: storage error: %s", command.sop_instance_uid, exc)
            return OUT_OF_RESOURCES, "storage error; see the node's log"
        except Exception:
            dataset.discard()
            self.stats["failed"] += 1
            LOGGER.exception("C-STORE %s failed", command.sop_instance_uid)
            return CANNOT_UNDERSTAND, "cannot process the dataset"
        self.stats["dup" if outcome.result == DUPLICATE else "stored"] += 1
        return SUCCESS, None

    def _prepare(self, command: commands.Command, dataset: IncomingDataset) -> PendingInstance:
        store = self.archive.store
        args = (dataset.transfer_syntax, command.sop_class_uid, command.sop_instance_uid, self.calling)
        if dataset.spool is None:
            return store.prepare(dataset.take(), *args, digest=dataset.digest.value())
        dataset.finish_spool()
        with open(dataset.spool, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            # Only the pages of element headers are touched: pixel data is skipped by length.
            view = memoryview(mapped)[dataset.meta_length :]
            try:
                return store.prepare(view, *args, digest=dataset.digest.value(), spooled=dataset.spool)
            finally:
                view.release()

    async def _find(
        self, command: commands.Command, context_id: int, dataset: IncomingDataset, held: list[bytes]
    ) -> tuple[int, str | None]:
        self.stats["find"] += 1
        syntax = dataset.transfer_syntax
        implicit, little = encoding_of(syntax)
        model_root = "PATIENT" if command.sop_class_uid == PATIENT_ROOT_FIND else "STUDY"
        # Responses go out in batches: a requester that polls its socket (pynetdicom) then
        # picks up a whole small result, final status included, in one pass.
        try:
            responses = self.archive.find_encoded.find(inflated(dataset.take(), syntax), implicit, little, model_root)
            for n, response in enumerate(responses, 1):
                if command.message_id in self.cancelled:
                    self.cancelled.discard(command.message_id)
                    return CANCEL, None
                self.respond(command, context_id, PENDING, None, response, held)
                if n % _FIND_YIELD_EVERY == 0 or not self.can_write.is_set():
                    self._flush(held)
                    await asyncio.sleep(0)
                    await self.can_write.wait()
        except PacsError as exc:
            LOGGER.warning("C-FIND refused: %s", exc)
            return exc.dimse_status, exc.comment
        except Exception:
            LOGGER.exception("C-FIND failed")
            return CANNOT_UNDERSTAND, "unable to process the query"
        self.cancelled.discard(command.message_id)
        return SUCCESS, None

    async def _retrieve(self, command: commands.Command, context_id: int, dataset: IncomingDataset) -> None:
        syntax = dataset.transfer_syntax
        implicit, little = encoding_of(syntax)
        try:
            identifier = decode_dataset(inflated(dataset.take(), syntax), implicit, little)
            status, comment, counts, failed = await Retrieval(self, command, context_id, (implicit, little)).run(identifier)
        except Exception:
            LOGGER.exception("retrieve failed")
            status, comment, counts, failed = UNABLE_TO_PROCESS, "unable to process the request", None, None
        if status is not None:
            self.respond(command, context_id, status, comment, failed, suboperations=counts)

    async def send_store(self, context_id: int, sop_class_uid: str, sop_instance_uid: str, dataset) -> int | None:
        """A C-STORE sub-operation to the requester (C-GET); its response status."""
        self.next_message_id = self.next_message_id % 65535 + 1
        message_id = self.next_message_id
        waiter = asyncio.get_running_loop().create_future()
        self.store_responses[message_id] = waiter
        command = commands.encode_store_request(message_id, sop_class_uid, sop_instance_uid)
        await self.can_write.wait()
        if not self.connected:
            return None
        await write_message(self.transport, self.can_write.wait, context_id, command, dataset, self.peer_max_pdu)
        try:
            return await asyncio.wait_for(waiter, self.ctx.idle_timeout)
        finally:
            self.store_responses.pop(message_id, None)

    @property
    def connected(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def _flush(self, held: list[bytes]) -> None:
        if held and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(held))
        held.clear()
