"""The aiohttp application: DICOMweb under /dicom-web, WADO-URI, the viewer under /viewer.

``build_app(archive)`` is the factory; each feature module registers its routes with an
``add_routes(app)`` function, and later modules (e.g. reconciliation) do the same:
``from pacsnode.web.app import ARCHIVE`` and ``app[ARCHIVE]`` is the worker's Archive.

Handlers are coroutines on the worker's event loop (uvloop). Index reads (LMDB, lock-free
readers, microseconds) run on the loop; blob reads of large instances, header parsing,
decoding and encoding run in the app's thread pool (``run_blocking``).
"""
from __future__ import annotations

import asyncio
import functools
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, TypeVar

from aiohttp import web

from pacsnode.services.archive import Archive

LOGGER = logging.getLogger(__name__)

DICOMWEB_ROOT = "/dicom-web"
ARCHIVE: web.AppKey[Archive] = web.AppKey("archive", Archive)
EXECUTOR: web.AppKey[ThreadPoolExecutor] = web.AppKey("executor", ThreadPoolExecutor)
VIEWER_DIR: web.AppKey[Path | None] = web.AppKey("viewer_dir", object)  # type: ignore[arg-type]

# Request bodies read whole (not STOW, which streams its parts).
_CLIENT_MAX_SIZE = 16 * 1024 * 1024
_T = TypeVar("_T")


def build_app(archive: Archive, viewer_dir: Path | None = None, threads: int | None = None) -> web.Application:
    """The node's web application over ``archive``.

    ``viewer_dir``: the installed OHIF viewer (``pacsnode viewer install``); by default
    ``$PACSNODE_VIEWER_DIR`` or ``<data>/viewer``.
    """
    from pacsnode.web import qido, reconciliation, rendered, stow, viewer, wado, wado_uri

    _keep_large_allocations()
    app = web.Application(client_max_size=_CLIENT_MAX_SIZE)
    app[ARCHIVE] = archive
    app[VIEWER_DIR] = viewer_dir if viewer_dir is not None else viewer.default_dir(archive.config.data)
    pool = ThreadPoolExecutor(max_workers=threads or min(8, 2 * (os.cpu_count() or 1)), thread_name_prefix="web")
    app[EXECUTOR] = pool

    async def close_pool(_app: web.Application) -> None:
        pool.shutdown(wait=False, cancel_futures=True)

    app.on_cleanup.append(close_pool)
    app.on_response_prepare.append(_cors)
    app.router.add_route("OPTIONS", DICOMWEB_ROOT + "/{tail:.*}", _preflight)
    qido.add_routes(app)
    wado.add_routes(app)
    rendered.add_routes(app)
    stow.add_routes(app)
    wado_uri.add_routes(app)
    viewer.add_routes(app)
    reconciliation.add_routes(app, archive)
    app.router.add_get("/", _root)
    return app


def _keep_large_allocations() -> None:
    """Let malloc reuse freed buffers of up to 64 MiB instead of mapping fresh pages for each:
    a 0.5 MB frame read into a freshly mapped buffer costs more in page faults than the copy."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 * 1024 * 1024)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 128 * 1024 * 1024)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # not glibc: keep its defaults
        pass


async def run_blocking(request: web.Request, fn: Callable[..., _T], *args) -> _T:
    """Run ``fn(*args)`` in the app's thread pool (file reads, parsing, codecs)."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(request.app[EXECUTOR], functools.partial(fn, *args))


def base_url(request: web.Request) -> str:
    """This server's DICOMweb root as the client reached it (for Retrieve URLs, BulkDataURIs).

    Some clients (dicomweb-client) send a Host header without the port: the port the
    connection came in on is added then, unless it is the scheme's default.
    """
    host = request.host
    if not host.endswith("]") and ":" not in host.rsplit("]", 1)[-1]:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        port = sockname[1] if sockname else None
        if port and port != (443 if request.scheme == "https" else 80):
            host = f"{host}:{port}"
    return f"{request.scheme}://{host}{DICOMWEB_ROOT}"


async def _cors(request: web.Request, response: web.StreamResponse) -> None:
    # Viewers served from another origin may read the DICOMweb API (no credentials are used).
    if request.path.startswith(DICOMWEB_ROOT) or request.path.startswith("/wado"):
        response.headers.setdefault("Access-Control-Allow-Origin", "*")
        response.headers.setdefault("Access-Control-Expose-Headers", "Content-Type, Content-Length, Warning")


async def _preflight(request: web.Request) -> web.Response:
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
            "Access-Control-Allow-Headers": request.headers.get("Access-Control-Request-Headers", "*"),
            "Access-Control-Max-Age": "86400",
        },
    )


async def _root(request: web.Request) -> web.Response:
    raise web.HTTPFound("/viewer/")
