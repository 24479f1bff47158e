"""Serve the archive over DICOM in the foreground: one listening socket, N worker processes.

The parent binds the port (so a busy port is reported at once), then forks the workers;
each opens its own LMDB environment and group committer after the fork and accepts on
the shared socket. The parent restarts a worker that dies and stops all on SIGINT/SIGTERM.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import os
import signal
import socket
import time

from pynetdicom.transport import ThreadedAssociationServer

from pacsnode.config import NodeConfig
from pacsnode.dimse.ae import build_ae, event_handlers
from pacsnode.dimse.dispatch import Dispatcher
from pacsnode.dimse.loads import WorkerLoads
from pacsnode.services.archive import Archive
from pacsnode.ul.association import FastPathContext
from pacsnode.ul.acse import FAST_ABSTRACT_SYNTAXES, supported_from

LOGGER = logging.getLogger(__name__)

_GRACE_SECONDS = 10.0


class PortInUseError(OSError):
    pass


def make_listener(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PortInUseError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.listen(512)
    sock.setblocking(False)
    return sock


def serve(config: NodeConfig, http_required: bool = True) -> None:
    """Serve until SIGINT/SIGTERM. ``http_required``: a busy HTTP port is an error (else the
    node runs without HTTP, with a warning: the port was only the default)."""
    listener = make_listener(config.host, config.port)
    http_listener = None
    if config.http_port:
        try:
            http_listener = make_listener(config.host, config.http_port)
        except PortInUseError as exc:
            if http_required:
                listener.close()
                raise
            LOGGER.warning("%s; DICOMweb and the viewer are off (choose another --http-port)", exc)
        else:
            LOGGER.info("DICOMweb on http://%s:%d/dicom-web, viewer on /viewer", config.host, config.http_port)
    LOGGER.info(
        "%s listening on %s:%d with %d worker(s), data in %s, %d remote(s)",
        config.ae_title,
        config.host,
        config.port,
        config.workers,
        config.data.resolve(),
        len(config.remotes),
    )
    coordinator = _start_coordinator(config, [listener, http_listener])
    try:
        if config.workers <= 1:
            run_worker(config, listener, http_listener)
        else:
            _supervise(config, listener, http_listener, coordinator)
    finally:
        if coordinator is not None:
            coordinator.stop()
    listener.close()
    if http_listener is not None:
        http_listener.close()


def _start_coordinator(config: NodeConfig, bound: list):
    """The coordinator process (HL7 feed, study completion, outbox), when configured."""
    if not config.coordinates:
        return None
    from pacsnode.dimse.coordinator import Coordinator

    hl7_listener = None
    if config.hl7_port:
        try:
            hl7_listener = make_listener(config.host, config.hl7_port)
        except PortInUseError:
            for sock in bound:
                if sock is not None:
                    sock.close()
            raise
    return Coordinator(config, hl7_listener).start()


def _supervise(
    config: NodeConfig, listener: socket.socket, http_listener: socket.socket | None = None, coordinator=None
) -> None:
    ctx = multiprocessing.get_context("fork")
    stopping = False

    def stop(*_) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    loads = WorkerLoads(config.workers)
    workers = {}
    for n in range(config.workers):
        workers[n] = ctx.Process(
            target=run_worker, args=(config, listener, http_listener, loads.for_worker(n)), name=f"pacsnode-worker-{n}"
        )
        workers[n].start()
    while not stopping:
        time.sleep(0.2)
        if coordinator is not None and not stopping:
            coordinator.check()
        for n, proc in list(workers.items()):
            if not proc.is_alive() and not stopping:
                LOGGER.error("worker %d exited with %s; restarting it", n, proc.exitcode)
                workers[n] = ctx.Process(
                    target=run_worker, args=(config, listener, http_listener, loads.for_worker(n)),
                    name=f"pacsnode-worker-{n}",
                )
                workers[n].start()
    LOGGER.info("shutting down %d worker(s)", len(workers))
    for proc in workers.values():
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGTERM)
    for proc in workers.values():
        proc.join(_GRACE_SECONDS + 5)
        if proc.is_alive():
            proc.kill()


def run_worker(
    config: NodeConfig,
    listener: socket.socket,
    http_listener: socket.socket | None = None,
    loads: WorkerLoads | None = None,
) -> None:
    """One worker: its own archive handles, a pynetdicom AE, the asyncio fast path and,
    given an HTTP socket, the DICOMweb application on the same event loop."""
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:  # uvloop is a dependency; plain asyncio still works without it
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    archive = Archive.open(config)
    ae = build_ae(archive)
    # Never serves its own (ephemeral, loopback) port: the dispatcher hands it sockets.
    pynetdicom_server = ae.make_server(
        ("127.0.0.1", 0), evt_handlers=event_handlers(archive), server_class=ThreadedAssociationServer
    )
    fast = FastPathContext(
        archive=archive,
        supported=supported_from(cx for cx in ae.supported_contexts if cx.abstract_syntax in FAST_ABSTRACT_SYNTAXES),
        max_pdu=config.max_pdu,
        idle_timeout=config.network_timeout,
    )
    dispatcher = Dispatcher(listener, fast if config.fast_path else None, pynetdicom_server, ae.acse_timeout, loads)
    # What is loaded by now lives as long as the worker: out of the collector's way, so that
    # the many short-lived objects of each C-STORE are collected without rescanning it.
    gc.freeze()
    stopped = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopped.set)

    async def main() -> None:
        runner = None
        if http_listener is not None:
            from aiohttp import web

            from pacsnode.web import build_app

            runner = web.AppRunner(build_app(archive), access_log=None, handle_signals=False, shutdown_timeout=_GRACE_SECONDS)
            await runner.setup()
            await web.SockSite(runner, http_listener).start()
        accepting = loop.create_task(dispatcher.serve())
        await stopped.wait()
        accepting.cancel()
        if runner is not None:
            # Stops accepting, lets requests in progress finish (within the grace period).
            await runner.cleanup()
        deadline = time.monotonic() + _GRACE_SECONDS
        # Let associations in progress finish their current work before closing them.
        while (dispatcher.fast_associations or ae.active_associations) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for transport in list(dispatcher.fast_associations):
            transport.abort()

    try:
        loop.run_until_complete(main())
    finally:
        for assoc in ae.active_associations:
            assoc.abort()
        pynetdicom_server.server_close()
        archive.close()
        loop.close()
        LOGGER.info("worker %d stopped", os.getpid())
