"""MLLP on asyncio: the listener's protocol (one ACK per block, in order) and the client
the outbound queue sends with. Framing lives in risnode.hl7.framing."""
from __future__ import annotations

import asyncio
import logging
import socket
from typing import Awaitable, Callable

from risnode.config import Endpoint
from risnode.errors import FramingError
from risnode.hl7.framing import Block, Junk, MllpDecoder, Oversized, frame

LOGGER = logging.getLogger(__name__)

# Blocks queued on one connection before we stop reading from it.
_MAX_QUEUED = 64


def _nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class MllpServerProtocol(asyncio.Protocol):
    """Blocks are answered one at a time in arrival order; bad framing is logged and skipped,
    an oversized block is answered (AR) from its head; the connection stays open."""

    def __init__(self, on_message: Callable[[bytes], Awaitable[bytes]],
                 on_oversized: Callable[[bytes, int], Awaitable[bytes]], max_size: int) -> None:
        self.on_message = on_message
        self.on_oversized = on_oversized
        self.decoder = MllpDecoder(max_size)
        self.queue: asyncio.Queue = asyncio.Queue()
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task | None = None
        self.peer = "?"
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        _nodelay(transport)
        self.peer = "%s:%s" % (transport.get_extra_info("peername") or ("?", "?"))[:2]
        self.task = asyncio.get_running_loop().create_task(self._answer())

    def data_received(self, data: bytes) -> None:
        for event in self.decoder.feed(data):
            if isinstance(event, Junk):
                LOGGER.warning("MLLP framing error from %s: %s (%d bytes skipped)", self.peer, event.reason, len(event.data))
            else:
                self.queue.put_nowait(event)
        if self.queue.qsize() >= _MAX_QUEUED and not self._paused:
            self._paused = True
            self.transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.task is not None:
            self.task.cancel()

    async def _answer(self) -> None:
        while True:
            event = await self.queue.get()
            try:
                if isinstance(event, Block):
                    ack = await self.on_message(event.payload)
                else:
                    LOGGER.warning("MLLP block of %d bytes from %s exceeds the limit", event.size, self.peer)
                    ack = await self.on_oversized(event.head, event.size)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Nothing was stored or acknowledged: closing tells the sender to resend.
                LOGGER.exception("message from %s not processed; closing the connection", self.peer)
                self.transport.close()
                return
            if self.transport.is_closing():
                return
            self.transport.write(frame(ack))
            if self._paused and self.queue.qsize() < _MAX_QUEUED // 2:
                self._paused = False
                self.transport.resume_reading()


class MllpClient:
    """One connection to an endpoint, opened on demand; ``request`` sends a block and
    returns the payload of the next block that comes back."""

    def __init__(self, max_size: int, timeout: float) -> None:
        self.max_size = max_size
        self.timeout = timeout
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._endpoint: Endpoint | None = None

    async def request(self, endpoint: Endpoint, payload: bytes) -> bytes:
        try:
            return await asyncio.wait_for(self._request(endpoint, payload), self.timeout)
        except BaseException:
            await self.close()
            raise

    async def _request(self, endpoint: Endpoint, payload: bytes) -> bytes:
        if self._conn is None or self._endpoint != endpoint or self._conn[1].is_closing():
            await self.close()
            self._conn = await asyncio.open_connection(endpoint.host, endpoint.port)
            self._endpoint = endpoint
            _nodelay(self._conn[1].transport)
        reader, writer = self._conn
        writer.write(frame(payload))
        await writer.drain()
        decoder = MllpDecoder(self.max_size)
        while True:
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("connection closed before the ACK")
            for event in decoder.feed(data):
                if isinstance(event, Block):
                    return event.payload
                if isinstance(event, Oversized):
                    raise FramingError(f"ACK of {event.size} bytes exceeds the limit")

    async def close(self) -> None:
        if self._conn is not None:
            writer = self._conn[1]
            self._conn = None
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass
