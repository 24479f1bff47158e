"""An asyncio Storage SCU: the association a C-MOVE opens to its destination."""
from __future__ import annotations

import asyncio
import logging
import socket

from pydicom.uid import UID
from pynetdicom import build_context
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
)

from pacsnode.dicom.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from pacsnode.ul import commands, pdu
from pacsnode.ul.acse import APPLICATION_CONTEXT
from pacsnode.ul.stream import write_message

LOGGER = logging.getLogger(__name__)

_MAX_CONTEXTS = 128


class AssociationRefused(ConnectionError):
    pass


class _Client(asyncio.Protocol):
    """Frames PDUs from the peer and hands them to whoever awaits the next one."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.pdus: asyncio.Queue = asyncio.Queue()
        self.transport: asyncio.Transport | None = None
        self.can_write = asyncio.Event()
        self.can_write.set()

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= 6:
            pdu_type, length = pdu.PDU_HEADER.unpack_from(self.buf)
            if len(self.buf) < 6 + length:
                return
            self.pdus.put_nowait((pdu_type, bytes(self.buf[: 6 + length])))
            del self.buf[: 6 + length]

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.can_write.set()
        self.pdus.put_nowait((None, b""))


class StoreSCU:
    """Propose contexts, then send C-STORE-RQs one at a time and await each response."""

    def __init__(self, client: _Client, contexts: dict[int, tuple[str, str]], peer_max_pdu: int, timeout: float) -> None:
        self.client = client
        self.contexts = contexts
        self.peer_max_pdu = peer_max_pdu
        self.timeout = timeout
        self.message_id = 0

    @classmethod
    async def connect(
        cls, host: str, port: int, calling: str, called: str, proposals: list[tuple[str, list[str]]], max_pdu: int, timeout: float
    ) -> "StoreSCU":
        loop = asyncio.get_running_loop()
        transport, client = await asyncio.wait_for(loop.create_connection(_Client, host, port), timeout)
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.write(_associate_rq(calling, called, proposals[:_MAX_CONTEXTS], max_pdu))
        pdu_type, raw = await asyncio.wait_for(client.pdus.get(), timeout)
        if pdu_type != pdu.A_ASSOCIATE_AC:
            transport.close()
            if pdu_type == pdu.A_ASSOCIATE_RJ:
                rj = A_ASSOCIATE_RJ()
                rj.decode(raw)
                raise AssociationRefused(f"{called} rejected the association (reason {rj.reason_diagnostic})")
            raise AssociationRefused(f"{called} answered the association request with PDU type {pdu_type}")
        ac = A_ASSOCIATE_AC()
        ac.decode(raw)
        primitive = ac.to_primitive()
        contexts = {}
        for cx in primitive.presentation_context_definition_results_list:
            if cx.result == 0x00:
                abstract, _ = proposals[(cx.context_id - 1) // 2]
                contexts[cx.context_id] = (abstract, str(cx.transfer_syntax[0]))
        peer_max = next(
            (i.maximum_length_received for i in primitive.user_information if isinstance(i, MaximumLengthNotification)), 0
        )
        return cls(client, contexts, peer_max or 0, timeout)

    @property
    def alive(self) -> bool:
        transport = self.client.transport
        return transport is not None and not transport.is_closing()

    def accepted_syntaxes(self, sop_class_uid: str) -> dict[str, int]:
        """Transfer syntax -> context id, for the contexts accepted for this SOP class."""
        return {ts: cx for cx, (abstract, ts) in self.contexts.items() if abstract == sop_class_uid}

    async def store(
        self, context_id: int, sop_class_uid: str, sop_instance_uid: str, dataset, originator: str | None, originator_id: int | None
    ) -> int:
        """One C-STORE sub-operation; returns the peer's status."""
        if not self.alive:  # no answer could come: fail now, not after the timeout
            raise ConnectionError("the association with the storage peer has ended")
        self.message_id = self.message_id % 65535 + 1
        command = commands.encode_store_request(self.message_id, sop_class_uid, sop_instance_uid, originator, originator_id)
        await write_message(self.client.transport, self.client.can_write.wait, context_id, command, dataset, self.peer_max_pdu)
        parts = []
        while True:
            try:
                pdu_type, raw = await asyncio.wait_for(self.client.pdus.get(), self.timeout)
            except asyncio.TimeoutError:
                self.abort()  # a late answer would leave the association in an unknown state
                raise
            if pdu_type != pdu.P_DATA_TF:
                # Whatever it was, the association is over: no later instance may be sent on it.
                if pdu_type == pdu.A_ABORT and self.client.transport is not None:
                    self.client.transport.close()
                else:
                    self.abort()
                raise ConnectionError(f"the storage peer sent PDU type {pdu_type} instead of a C-STORE-RSP")
            for _, is_command, last, fragment in pdu.iter_pdvs(memoryview(raw)[6:]):
                if is_command:
                    parts.append(bytes(fragment))
                    if last:
                        response = commands.decode_command(b"".join(parts))
                        if response.responding_to == self.message_id and response.status is not None:
                            return response.status
                        parts = []

    async def release(self) -> None:
        transport = self.client.transport
        if transport is None or transport.is_closing():
            return
        transport.write(bytes([pdu.A_RELEASE_RQ, 0, 0, 0, 0, 4, 0, 0, 0, 0]))
        try:
            while True:
                pdu_type, _ = await asyncio.wait_for(self.client.pdus.get(), self.timeout)
                if pdu_type in (pdu.A_RELEASE_RP, None):
                    break
        except asyncio.TimeoutError:
            pass
        transport.close()

    def abort(self) -> None:
        transport = self.client.transport
        if transport is not None and not transport.is_closing():
            transport.write(pdu.abort_pdu(pdu.SOURCE_USER, pdu.REASON_NOT_SPECIFIED))
            transport.close()


def _associate_rq(calling: str, called: str, proposals: list[tuple[str, list[str]]], max_pdu: int) -> bytes:
    rq = A_ASSOCIATE()
    rq.application_context_name = UID(APPLICATION_CONTEXT)
    rq.calling_ae_title, rq.called_ae_title = calling, called
    contexts = []
    for n, (abstract, syntaxes) in enumerate(proposals):
        cx = build_context(abstract, syntaxes)
        cx.context_id = 2 * n + 1
        contexts.append(cx)
    rq.presentation_context_definition_list = contexts
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = max_pdu
    impl_uid = ImplementationClassUIDNotification()
    impl_uid.implementation_class_uid = UID(IMPLEMENTATION_CLASS_UID)
    impl_name = ImplementationVersionNameNotification()
    impl_name.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    rq.user_information = [max_length, impl_uid, impl_name]
    pdu_rq = A_ASSOCIATE_RQ()
    pdu_rq.from_primitive(rq)
    return pdu_rq.encode()
