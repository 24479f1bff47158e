"""Serve the archive over DICOM in the foreground until SIGINT/SIGTERM."""
from __future__ import annotations

import logging
import signal
import threading

from pacsnode.config import NodeConfig
from pacsnode.dimse.ae import build_ae, event_handlers
from pacsnode.services.archive import Archive

LOGGER = logging.getLogger(__name__)


class PortInUseError(OSError):
    pass


def serve(config: NodeConfig, ready: threading.Event | None = None) -> None:
    archive = Archive.open(config)
    stop = threading.Event()
    try:
        ae = build_ae(archive)
        try:
            server = ae.start_server((config.host, config.port), block=False, evt_handlers=event_handlers(archive))
        except OSError as exc:
            raise PortInUseError(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}") from exc
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        LOGGER.info(
            "%s listening on %s:%d, data in %s, %d remote(s)",
            config.ae_title,
            config.host,
            config.port,
            config.data.resolve(),
            len(config.remotes),
        )
        if ready is not None:
            ready.set()
        stop.wait()
        LOGGER.info("shutting down")
        server.shutdown()
        ae.shutdown()
    finally:
        archive.close()
