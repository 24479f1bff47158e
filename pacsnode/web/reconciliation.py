"""The reconciliation view over HTTP (JSON), on the node's HTTP port.

  GET  /api/reconciliation?state=open|resolved|all    items, newest first (default: open)
  GET  /api/reconciliation/{id}                         one item, with its audit entries
  POST /api/reconciliation/{id}/resolve                 {"action": "link", "accession": ...}
                                                        {"action": "correct", "identity": {...}}
                                                        {"action": "accept"}; optional "reason", "by"
  GET  /api/audit?study=UID                             identity changes with old and new values
  GET  /api/orders                                      the orders the RIS announced (HL7)

Errors are {"error": "..."} with 400, 404 (unknown item or order) or 409 (already resolved).
A resolution re-encodes instances (file I/O): it runs in a thread, not on the loop.
"""
from __future__ import annotations

import asyncio
import json

from aiohttp import web

from pacsnode.errors import PacsError, ReconciliationError
from pacsnode.services.reconcile import ReconciliationService

SERVICE: web.AppKey[ReconciliationService] = web.AppKey("reconciliation", ReconciliationService)


def add_routes(app: web.Application, archive=None) -> None:
    """Register the routes; ``archive`` defaults to the app's (``pacsnode.web.app.ARCHIVE``)."""
    if archive is None:
        from pacsnode.web.app import ARCHIVE

        archive = app[ARCHIVE]
    app[SERVICE] = ReconciliationService(archive)
    app.router.add_get("/api/reconciliation", list_items)
    app.router.add_get("/api/reconciliation/{id}", get_item)
    app.router.add_post("/api/reconciliation/{id}/resolve", resolve)
    app.router.add_get("/api/audit", audit_log)
    app.router.add_get("/api/orders", orders)


def _error(exc: PacsError) -> web.Response:
    return web.json_response({"error": str(exc)}, status=getattr(exc, "http_status", 400))


async def list_items(request: web.Request) -> web.Response:
    try:
        items = request.app[SERVICE].items(request.query.get("state") or "open")
    except PacsError as exc:
        return _error(exc)
    return web.json_response(items)


async def get_item(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    try:
        item = service.item(request.match_info["id"])
    except PacsError as exc:
        return _error(exc)
    return web.json_response(item | {"audit": [e for e in service.audit_log(item["study_uid"]) if e.get("item") == item["id"]]})


async def resolve(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return _error(ReconciliationError(f"body is not JSON: {exc}"))
    if not isinstance(body, dict):
        return _error(ReconciliationError("body must be a JSON object"))
    identity = body.get("identity") or {}
    if not isinstance(identity, dict):
        return _error(ReconciliationError("identity must be an object of DICOM keywords"))
    service = request.app[SERVICE]
    loop = asyncio.get_running_loop()
    try:
        item = await loop.run_in_executor(None, lambda: service.resolve(
            request.match_info["id"], str(body.get("action", "")), accession=str(body.get("accession", "") or ""),
            identity=identity, reason=str(body.get("reason", "") or ""), by=str(body.get("by") or f"api {request.remote}"),
        ))
    except PacsError as exc:
        return _error(exc)
    return web.json_response(item)


async def audit_log(request: web.Request) -> web.Response:
    return web.json_response(request.app[SERVICE].audit_log(request.query.get("study") or None))


async def orders(request: web.Request) -> web.Response:
    return web.json_response(request.app[SERVICE].orders())
