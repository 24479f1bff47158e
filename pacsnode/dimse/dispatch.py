"""Accept connections and route each association: storage-only ones to the asyncio fast
path, everything else (queries, retrieves, mixed proposals) to pynetdicom.

The A-ASSOCIATE-RQ is read with MSG_PEEK, so whichever side takes the socket reads the
association request itself from the start of the stream.
"""
from __future__ import annotations

import asyncio
import logging
import socket

from pynetdicom.transport import ThreadedAssociationServer

from pacsnode.dimse.loads import WorkerLoads
from pacsnode.ul import pdu
from pacsnode.ul.acse import FAST_ABSTRACT_SYNTAXES, parse_associate_rq, suits_fast_path
from pacsnode.ul.association import FastAssociation, FastPathContext

LOGGER = logging.getLogger(__name__)

_MAX_REQUEST = 1 << 20  # an A-ASSOCIATE-RQ larger than this is left to pynetdicom to refuse
# How long a busier worker waits before taking a new connection itself.
_LET_OTHERS_ACCEPT = 0.002


async def _readable(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_reader(sock.fileno(), lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_reader(sock.fileno())


class Dispatcher:
    def __init__(
        self,
        listener: socket.socket,
        fast: FastPathContext | None,
        pynetdicom_server: ThreadedAssociationServer,
        acse_timeout: float,
        loads: WorkerLoads | None = None,
    ) -> None:
        self.listener = listener
        self.loads = loads
        self.fast = fast
        # SOP classes the AE supports that only pynetdicom serves (e.g. storage commitment).
        self.slow_syntaxes = frozenset(
            str(cx.abstract_syntax) for cx in pynetdicom_server.ae.supported_contexts
        ) - FAST_ABSTRACT_SYNTAXES
        self.pynetdicom_server = pynetdicom_server
        self.acse_timeout = acse_timeout
        self.fast_associations: set[asyncio.Transport] = set()

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await _readable(self.listener)
            if self.loads is not None and self.loads.busier_than_another():
                await asyncio.sleep(_LET_OTHERS_ACCEPT)
            try:
                sock, address = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                continue  # another worker took it
            except OSError as exc:  # e.g. EMFILE: wait rather than spin
                LOGGER.error("accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            loop.create_task(self._route(sock, address))

    async def _route(self, sock: socket.socket, address) -> None:
        try:
            request = await asyncio.wait_for(self._peek_request(sock), self.acse_timeout)
        except (asyncio.TimeoutError, OSError) as exc:
            # INFO, not WARNING: port probes and health checks connect and leave like this.
            LOGGER.info("connection from %s:%s closed before an association request (%s)", *address[:2], exc or "timeout")
            sock.close()
            return
        if request is not None and self.fast is not None and self._suits_fast_path(request):
            loop = asyncio.get_running_loop()
            transport, _ = await loop.connect_accepted_socket(lambda: FastAssociation(self.fast, sock), sock)
            self.fast_associations.add(transport)
            if self.loads is not None:
                self.loads.opened()
            transport.get_protocol().on_closed = lambda: self._closed(transport)
            return
        sock.setblocking(True)
        # pynetdicom's request handler starts the association in a thread of its own.
        self.pynetdicom_server.finish_request(sock, address)

    def _closed(self, transport: asyncio.Transport) -> None:
        self.fast_associations.discard(transport)
        if self.loads is not None:
            self.loads.closed()

    def _suits_fast_path(self, request: bytes) -> bool:
        try:
            return suits_fast_path(parse_associate_rq(request), self.slow_syntaxes)
        except Exception:  # a malformed request: pynetdicom answers it
            return False

    @staticmethod
    async def _peek_request(sock: socket.socket) -> bytes | None:
        """The whole first PDU, left unread in the socket; None if it is not an A-ASSOCIATE-RQ."""
        while True:
            await _readable(sock)
            head = sock.recv(6, socket.MSG_PEEK)
            if len(head) < 6:
                if not head:
                    raise ConnectionResetError("peer closed the connection")
                continue
            pdu_type, length = pdu.PDU_HEADER.unpack(head)
            if pdu_type != pdu.A_ASSOCIATE_RQ or length > _MAX_REQUEST:
                return None
            data = sock.recv(6 + length, socket.MSG_PEEK)
            if len(data) == 6 + length:
                return data



