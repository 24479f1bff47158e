"""The REST API (JSON): routes call the RIS; RisError becomes its HTTP status."""
from __future__ import annotations

import json

from aiohttp import web

from risnode.errors import InvalidRequest, RisError
from risnode.records import Order, Patient
from risnode.services.results import superbill_csv
from risnode.services.ris import Ris

RIS = web.AppKey("ris", Ris)
routes = web.RouteTableDef()


@web.middleware
async def errors(request: web.Request, handler):
    try:
        return await handler(request)
    except RisError as exc:
        return web.json_response({"error": str(exc)}, status=exc.http_status)


def order_json(order: Order, patient: Patient | None) -> dict:
    data = order.to_dict()
    data["patient"] = {"id": patient.id, "name": patient.name} if patient else {"id": order.patient_id, "name": ""}
    return data


@routes.get("/api/patients/{id}")
async def get_patient(request: web.Request) -> web.Response:
    return web.json_response(request.app[RIS].patient(request.match_info["id"]).to_dict())


@routes.get("/api/orders")
async def list_orders(request: web.Request) -> web.Response:
    q = request.query
    found = request.app[RIS].orders(q.get("status") or None, q.get("date") or None, q.get("modality") or None)
    return web.json_response([order_json(o, p) for o, p in found])


@routes.get("/api/orders/{accession}")
async def get_order(request: web.Request) -> web.Response:
    return web.json_response(order_json(*request.app[RIS].order(request.match_info["accession"])))


@routes.post("/api/orders/{accession}/arrive")
async def arrive(request: web.Request) -> web.Response:
    await request.app[RIS].arrive(request.match_info["accession"])
    return web.json_response(order_json(*request.app[RIS].order(request.match_info["accession"])))


async def _body(request: web.Request) -> dict:
    try:
        body = await request.json()
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("body must be a JSON object")
    return body


@routes.post("/api/orders/{accession}/report")
async def report(request: web.Request) -> web.Response:
    body = await _body(request)
    accession = request.match_info["accession"]
    await request.app[RIS].report(accession, str(body.get("text", "")), str(body.get("radiologist", "")), str(body.get("status", "")))
    return web.json_response(order_json(*request.app[RIS].order(accession)))


@routes.get("/api/outbound")
async def outbound(request: web.Request) -> web.Response:
    return web.json_response([m.summary() for m in request.app[RIS].outbound(request.query.get("state") or None)])


@routes.get("/api/orders/{accession}/superbill")
async def superbill(request: web.Request) -> web.Response:
    bill = request.app[RIS].superbill(request.match_info["accession"])
    if request.query.get("format") == "csv":
        return web.Response(text=superbill_csv(bill), content_type="text/csv",
                            headers={"Content-Disposition": f'attachment; filename="superbill-{bill["accession"]}.csv"'})
    return web.json_response(bill)
