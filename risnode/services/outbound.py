"""The outbound queue: enqueue in the writer's transaction; one worker per role sends the
oldest message, waits for its ACK and retries with backoff until AA. A message is never
skipped, so a role's messages arrive in the order they were queued."""
from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Awaitable, Callable

from risnode.config import Endpoint
from risnode.errors import RisError
from risnode.hl7.message import read_ack
from risnode.records import OutboundMessage
from risnode.services.context import Context, next_control_id
from risnode.store import outbound as queue
from risnode.store import Store, Writer
from risnode.store.db import Tx

LOGGER = logging.getLogger(__name__)

EHR, BILLING, PACS = "ehr", "billing", "pacs"
ROLES = (EHR, BILLING, PACS)


def enqueue(tx: Tx, ctx: Context, role: str, kind: str, accession: str, build: Callable[[str], str], on_ack: str) -> OutboundMessage:
    """``build(control_id)`` returns the message text; it is stored as UTF-8 (MSH-18 says so)."""
    ident = next_control_id(tx, ctx)
    message = OutboundMessage(
        id=tx.next_counter("outbound"), role=role, kind=kind, control_id=ident, accession=accession,
        payload=build(ident).encode("utf-8"), created=ctx.at, on_ack=on_ack,
    )
    queue.add(tx, message)
    tx.after_commit.append(lambda: ctx.notify(role))
    return message


def backoff(attempts: int, initial: float, maximum: float) -> float:
    return min(maximum, initial * 2 ** max(0, attempts - 1))


def ack_outcome(raw: bytes, control_id: str) -> str:
    """"" for an AA that answers ``control_id``, else what was wrong."""
    code, answered, text = read_ack(raw)
    if not code:
        return f"no MSA in the reply ({text or 'no text'})"
    if answered != control_id:
        return f"ACK for {answered!r}, expected {control_id!r}"
    if code not in ("AA", "CA"):
        return f"{code}: {text}".strip()
    return ""


Send = Callable[[Endpoint, bytes], Awaitable[bytes]]
OnAck = Callable[[Tx, OutboundMessage, Context], None]


class Worker:
    """Sends one role's queue; ``wake()`` after an enqueue, ``stop()`` to end."""

    def __init__(self, role: str, store: Store, writer: Writer, endpoint: Endpoint | None, send: Send,
                 context: Callable[[str], Context], on_ack: OnAck, retry_initial: float, retry_max: float) -> None:
        self.role, self.store, self.writer, self.endpoint, self.send = role, store, writer, endpoint, send
        self.context, self.on_ack = context, on_ack
        self.retry_initial, self.retry_max = retry_initial, retry_max
        self._wake = asyncio.Event()
        self._stopping = False

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def _sleep(self, seconds: float | None) -> None:
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    async def run(self) -> None:
        while not self._stopping:
            with self.store.read() as tx:
                message = queue.head(tx, self.role)
            if message is None:
                await self._sleep(None)
                continue
            error = await self._attempt(message)
            if error is None:
                continue
            delay = backoff(message.attempts + 1, self.retry_initial, self.retry_max)
            ctx = self.context(f"outbound {message.control_id}")
            retry_at = (ctx.now + timedelta(seconds=delay)).isoformat(timespec="seconds")
            await self.writer(_failed, message.id, error, retry_at)
            LOGGER.warning("%s %s to %s failed (attempt %d, retry in %.1fs): %s", message.kind, message.control_id,
                           self.role, message.attempts + 1, delay, error)
            deadline = asyncio.get_running_loop().time() + delay
            while not self._stopping and (left := deadline - asyncio.get_running_loop().time()) > 0:
                await self._sleep(left)  # a wake-up (new message) does not cut the backoff short

    async def _attempt(self, message: OutboundMessage) -> str | None:
        """None when acknowledged with AA, else the error."""
        if self.endpoint is None:
            return f"no endpoint for {self.role}: set --{self.role}"
        try:
            reply = await self.send(self.endpoint, message.payload)
        except (OSError, asyncio.TimeoutError, RisError) as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        error = ack_outcome(reply, message.control_id)
        if error:
            return error
        await self.writer(self._acked, message.id, self.context(f"{self.role} ACK {message.control_id}"))
        LOGGER.info("%s %s acknowledged by %s", message.kind, message.control_id, self.role)
        return None

    def _acked(self, tx: Tx, message_id: int, ctx: Context) -> None:
        message = queue.get(tx, message_id)
        message.state, message.acked, message.last_error = "acked", ctx.at, ""
        queue.update(tx, message)
        self.on_ack(tx, message, ctx)


def _failed(tx: Tx, message_id: int, error: str, retry_at: str) -> None:
    message = queue.get(tx, message_id)
    message.attempts += 1
    message.last_error = error[:500]
    message.next_attempt = retry_at
    queue.update(tx, message)
