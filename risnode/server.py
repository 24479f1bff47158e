"""`risnode serve`: MLLP, HTTP and the outbound workers on one uvloop loop; pynetdicom's
DICOM server in its own threads. Runs until SIGINT/SIGTERM, then stops in reverse order."""
from __future__ import annotations

import asyncio
import logging
import signal

import uvloop
from aiohttp import web

from risnode.config import RisConfig
from risnode.dimse.ae import build_ae, event_handlers
from risnode.mllp import MllpClient, MllpServerProtocol
from risnode.services import outbound
from risnode.services.ris import Ris
from risnode.store import Store, Writer
from risnode.web.app import make_app

LOGGER = logging.getLogger(__name__)


class PortInUseError(OSError):
    pass


def serve(config: RisConfig) -> None:
    uvloop.run(_serve(config))


def _port_in_use(what: str, host: str, port: int, exc: OSError) -> PortInUseError:
    return PortInUseError(f"cannot listen on {host}:{port} ({what}): {exc.strerror or exc}")


async def _close_server(server: asyncio.AbstractServer) -> None:
    server.close()
    await server.wait_closed()


async def _serve(config: RisConfig) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    store = Store(config.data, config.map_size)
    writer = Writer(store)
    ris = Ris(config, store, writer)
    closers: list = []
    try:
        try:
            hl7 = await loop.create_server(
                lambda: MllpServerProtocol(ris.receive_hl7, ris.receive_oversized, config.max_message_bytes),
                config.host, config.hl7_port, reuse_address=True)
        except OSError as exc:
            raise _port_in_use("HL7", config.host, config.hl7_port, exc) from exc
        closers.append(lambda: _close_server(hl7))
        runner = web.AppRunner(make_app(ris), access_log=None)
        await runner.setup()
        closers.append(runner.cleanup)
        try:
            await web.TCPSite(runner, config.host, config.http_port).start()
        except OSError as exc:
            raise _port_in_use("HTTP", config.host, config.http_port, exc) from exc
        ae = build_ae(ris)
        try:
            dicom = ae.start_server((config.host, config.port), block=False, evt_handlers=event_handlers(ris))
        except OSError as exc:
            raise _port_in_use("DICOM", config.host, config.port, exc) from exc
        closers.append(dicom.shutdown)

        workers = {}
        endpoints = {outbound.EHR: config.ehr, outbound.BILLING: config.billing_endpoint, outbound.PACS: config.pacs_hl7}
        for role in outbound.ROLES:
            client = MllpClient(config.max_message_bytes, config.ack_timeout)
            worker = outbound.Worker(role, store, writer, endpoints[role], client.request, ris.context,
                                     ris.acknowledged, config.retry_initial, config.retry_max)
            workers[role] = (worker, loop.create_task(worker.run(), name=f"outbound-{role}"), client)
        ris.notify = lambda role: loop.call_soon_threadsafe(workers[role][0].wake)

        LOGGER.info("%s: HL7 on %s:%d, DICOM on %d, HTTP on %d, data in %s; results to %s, charges to %s, orders to %s",
                    config.ae_title, config.host, config.hl7_port, config.port, config.http_port, config.data.resolve(),
                    config.ehr or "(nowhere: set --ehr)", config.billing_endpoint or "(nowhere)",
                    f"the PACS at {config.pacs_hl7}" if config.pacs_hl7 else "no PACS (set --pacs-hl7)")
        await stop.wait()
        LOGGER.info("shutting down")
        for worker, task, client in workers.values():
            worker.stop()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await client.close()
    finally:
        for close in reversed(closers):
            result = close()
            if asyncio.iscoroutine(result):
                await result
        writer.close()
        store.close()

