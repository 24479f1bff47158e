"""The aiohttp application: API routes, the front-desk page, one error middleware."""
from __future__ import annotations

from aiohttp import web

from risnode.services.ris import Ris
from risnode.web import api, frontdesk


def make_app(ris: Ris) -> web.Application:
    app = web.Application(middlewares=[api.errors], client_max_size=1024 * 1024)
    app[api.RIS] = ris
    app.add_routes(api.routes)
    app.add_routes(frontdesk.routes)
    return app
