"""WADO-URI (PS3.18 9): ``GET /wado?requestType=WADO&studyUID=..&seriesUID=..&objectUID=..``.

``contentType`` application/dicom gives the Part 10 object (stored syntax when
``transferSyntax`` names it or is ``*``, else Explicit VR Little Endian); image/jpeg, image/png
and image/gif give a rendered frame (``frameNumber``, ``rows``, ``columns``, ``region``,
``windowCenter`` / ``windowWidth``, ``imageQuality``). Without ``contentType`` an image comes
back as JPEG, any other object as application/dicom.
"""
from __future__ import annotations

from aiohttp import web

from pacsnode.dicom.uids import EXPLICIT_VR_LE
from pacsnode.web.app import ARCHIVE, DICOMWEB_ROOT, run_blocking
from pacsnode.web.media import DICOM, parse_media_type
from pacsnode.web.rendered import RENDERED_TYPES, RenderParams, _has_pixels, _render
from pacsnode.web.wado import read_blob, transcodable, transcode_part10


def _required(q, name: str) -> str:
    value = q.get(name, "").strip()
    if not value:
        raise web.HTTPBadRequest(text=f"WADO-URI: {name} is required")
    return value


def _number(q, name: str, kind=float):
    if name not in q:
        return None
    try:
        return kind(q[name])
    except ValueError:
        raise web.HTTPBadRequest(text=f"WADO-URI: {name}={q[name]!r} is not a number") from None


async def wado_uri(request: web.Request) -> web.StreamResponse:
    q = request.query
    if q.get("requestType", "").upper() != "WADO":
        raise web.HTTPBadRequest(text="WADO-URI: requestType=WADO is required")
    study, series, instance = (_required(q, n) for n in ("studyUID", "seriesUID", "objectUID"))
    rec = request.app[ARCHIVE].index.get_instance(instance)
    if rec is None or rec.study_uid != study or rec.series_uid != series:
        raise web.HTTPNotFound(text=f"no instance {instance} in series {series} of study {study}")
    wanted = [parse_media_type(t).type for t in q.get("contentType", "").split(",") if t.strip()]
    if not wanted:
        wanted = ["image/jpeg"] if _has_pixels(rec) else [DICOM]
    for media_type in wanted:
        if media_type in (DICOM, "application/*", "*/*") and (media_type == DICOM or not _has_pixels(rec)):
            syntax = q.get("transferSyntax", EXPLICIT_VR_LE).strip()
            blob = await read_blob(request, rec)
            if syntax in ("*", rec.transfer_syntax):
                return web.Response(body=blob, content_type=DICOM)
            if syntax == EXPLICIT_VR_LE and transcodable(rec.transfer_syntax):
                body = await run_blocking(request, transcode_part10, blob, rec)
                return web.Response(body=body, content_type=DICOM)
            continue
        chosen = next((t for t in RENDERED_TYPES if t == media_type or media_type in ("image/*", "*/*")), None)
        if chosen is None:
            continue
        params = RenderParams(media_type=chosen)
        quality = _number(q, "imageQuality", int)
        if quality is not None:
            if not 1 <= quality <= 100:
                raise web.HTTPBadRequest(text="WADO-URI: imageQuality from 1 to 100")
            params.quality = quality
        center, width = _number(q, "windowCenter"), _number(q, "windowWidth")
        if (center is None) != (width is None) or (width is not None and width <= 0):
            raise web.HTTPBadRequest(text="WADO-URI: windowCenter and windowWidth go together, width > 0")
        if center is not None:
            params.window = (center, width, "LINEAR")
        rows, columns = _number(q, "rows", int), _number(q, "columns", int)
        if rows or columns:
            params.viewport = (columns or 1 << 16, rows or 1 << 16)
        if "region" in q:
            try:
                x1, y1, x2, y2 = (float(v) for v in q["region"].split(","))
            except ValueError:
                raise web.HTTPBadRequest(text="WADO-URI: region=x1,y1,x2,y2 (0.0 to 1.0)") from None
            cols, rws = int(rec.attrs.get("Columns") or 0), int(rec.attrs.get("Rows") or 0)
            params.region = (x1 * cols, y1 * rws, (x2 - x1) * cols, (y2 - y1) * rws)
        frame = _number(q, "frameNumber", int) or 1
        if frame < 1:
            raise web.HTTPBadRequest(text="WADO-URI: frameNumber from 1")
        return await _render(request, rec, frame - 1, params)
    raise web.HTTPNotAcceptable(text="WADO-URI: contentType application/dicom, image/jpeg, image/png or image/gif")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/wado", wado_uri)
    app.router.add_get(DICOMWEB_ROOT + "/wado", wado_uri)
