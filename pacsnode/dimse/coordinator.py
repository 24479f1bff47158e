"""The coordinator: one process beside the workers for what must happen once, not per worker.

* the HL7 feed from the RIS over MLLP (``--hl7-port``; the parent binds the port, so a busy
  port is reported at once): messages are applied one at a time, in arrival order;
* study completion and the outbox (MPPS forwarded, Instance Availability Notifications);
* worklist look-ups of accession numbers no order announced (``--worklist``).

It opens its own archive handles after the fork, like a worker. The parent restarts it if
it dies and stops it with the workers.
"""
from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

from pacsnode.config import NodeConfig

LOGGER = logging.getLogger(__name__)

TICK_SECONDS = 0.5
_MAX_MESSAGE_BYTES = 1024 * 1024


class Coordinator:
    """The parent's handle: ``start()``, ``check()`` (restart after a crash), ``stop()``."""

    def __init__(self, config: NodeConfig, hl7_listener: socket.socket | None) -> None:
        self.config = config
        self.hl7_listener = hl7_listener
        self.proc: multiprocessing.Process | None = None

    def start(self) -> "Coordinator":
        ctx = multiprocessing.get_context("fork")
        self.proc = ctx.Process(target=run, args=(self.config, self.hl7_listener), name="pacsnode-coordinator")
        self.proc.start()
        return self

    def check(self) -> None:
        if self.proc is not None and not self.proc.is_alive() and self.proc.exitcode != 0:
            LOGGER.error("coordinator exited with %s; restarting it", self.proc.exitcode)
            self.start()

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.is_alive():
            os.kill(self.proc.pid, signal.SIGTERM)
        self.proc.join(15)
        if self.proc.is_alive():
            self.proc.kill()
        if self.hl7_listener is not None:
            self.hl7_listener.close()


def run(config: NodeConfig, hl7_listener: socket.socket | None) -> None:
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    stopped = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopped.set)
    from pacsnode.services.archive import Archive

    archive = Archive.open(config)
    # One thread applies HL7 messages and worklist answers: identity changes never overlap.
    changes = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hl7")
    ticking = threading.Event()
    worker = threading.Thread(target=_tick_loop, args=(archive, changes, ticking), name="workflow", daemon=True)

    async def main() -> None:
        server = None
        if hl7_listener is not None:
            from pacsnode.services.hl7feed import Hl7Feed
            from risnode.mllp import MllpServerProtocol

            feed = Hl7Feed(archive, application=config.ae_title)

            async def on_message(raw: bytes) -> bytes:
                return await loop.run_in_executor(changes, feed.receive, raw)

            async def on_oversized(head: bytes, size: int) -> bytes:
                return await loop.run_in_executor(changes, feed.oversized, head, size)

            server = await loop.create_server(
                lambda: MllpServerProtocol(on_message, on_oversized, _MAX_MESSAGE_BYTES), sock=hl7_listener
            )
            LOGGER.info("HL7 feed on %s:%d", config.host, config.hl7_port)
        worker.start()
        await stopped.wait()
        ticking.set()
        if server is not None:
            server.close()
            await server.wait_closed()

    try:
        loop.run_until_complete(main())
    finally:
        worker.join(10)
        changes.shutdown(wait=True)
        archive.close()
        loop.close()
        LOGGER.info("coordinator %d stopped", os.getpid())


def _tick_loop(archive, changes: ThreadPoolExecutor, stopping: threading.Event) -> None:
    from pacsnode.dimse.outbound import OutboxSender, build_scu, worklist_find
    from pacsnode.services.completion import CompletionWatcher
    from pacsnode.services.reconcile import ReconciliationService

    config = archive.config
    scu = build_scu(config)
    watcher = CompletionWatcher(archive)
    sender = OutboxSender(archive, scu)
    reconcile = ReconciliationService(archive)
    worklist = config.worklist

    def look_up() -> None:
        reconcile.look_up_unmatched(lambda acc: worklist_find(scu, worklist, acc), f"worklist {worklist.ae_title}")

    while not stopping.is_set():
        for step in (watcher.tick, sender.send_pending):
            try:
                step()
            except Exception:
                LOGGER.exception("workflow step %s failed", step.__qualname__)
        if worklist is not None:
            try:
                changes.submit(look_up).result()
            except Exception:
                LOGGER.exception("worklist look-up failed")
        stopping.wait(TICK_SECONDS)
