"""The front-desk page: today's orders by status, refreshing, with a check-in button.

Plain server-rendered HTML; check-in is a form POST that redirects back (no script needed).
"""
from __future__ import annotations

from html import escape
from urllib.parse import quote

from aiohttp import web

from risnode.errors import RisError
from risnode.records import STATUSES
from risnode.services.status import can_move
from risnode.web.api import RIS

REFRESH_SECONDS = 15
routes = web.RouteTableDef()

_STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em}table{border-collapse:collapse;margin-bottom:1.5em}
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}h2{margin-bottom:.3em}.flag{color:#b00}
.msg{background:#fee;padding:.5em}"""


def _name(pn: str) -> str:
    return ", ".join(p for p in pn.split("^")[:2] if p)


@routes.get("/")
async def page(request: web.Request) -> web.Response:
    ris = request.app[RIS]
    rows = ris.orders(day="today")
    today = ris.clock().date().isoformat()
    parts = [
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\">",
        f"<meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">",
        f"<title>Front desk {today}</title><style>{_STYLE}</style></head><body>",
        f"<h1>Front desk — {today}</h1>",
    ]
    if request.query.get("error"):
        parts.append(f"<p class=\"msg\" id=\"error\">{escape(request.query['error'])}</p>")
    if not rows:
        parts.append("<p id=\"empty\">No orders scheduled today.</p>")
    for status in STATUSES:
        group = [(o, p) for o, p in rows if o.status == status]
        if not group:
            continue
        parts.append(f"<section id=\"status-{status}\"><h2>{status.replace('_', ' ')} ({len(group)})</h2><table>")
        parts.append("<tr><th>Time</th><th>Accession</th><th>Patient</th><th>ID</th><th>Modality</th><th>Procedure</th><th></th></tr>")
        for order, patient in group:
            flags = " ".join(f"<span class=\"flag\">{escape(f.replace('_', ' '))}</span>" for f in order.flags)
            action = ""
            if can_move(order, "arrived") and order.status != "arrived":
                action = (f"<form method=\"post\" action=\"/frontdesk/{escape(order.accession)}/arrive\">"
                          f"<button type=\"submit\" name=\"checkin\">Check in</button></form>")
            parts.append(
                f"<tr data-accession=\"{escape(order.accession)}\"><td>{escape(order.scheduled[11:16])}</td>"
                f"<td>{escape(order.accession)}</td><td>{escape(_name(patient.name if patient else ''))} {flags}</td>"
                f"<td>{escape(order.patient_id)}</td><td>{escape(order.modality)}</td>"
                f"<td>{escape(order.procedure.get('meaning', ''))}</td><td>{action}</td></tr>"
            )
        parts.append("</table></section>")
    parts.append("</body></html>")
    return web.Response(text="".join(parts), content_type="text/html")


@routes.post("/frontdesk/{accession}/arrive")
async def check_in(request: web.Request) -> web.Response:
    try:
        await request.app[RIS].arrive(request.match_info["accession"])
    except RisError as exc:
        raise web.HTTPSeeOther(f"/?error={quote(str(exc))}") from None
    raise web.HTTPSeeOther("/")
