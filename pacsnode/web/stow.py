"""STOW-RS (PS3.18 10.5): multipart/related; type="application/dicom" uploads.

Every part is read first: a malformed body (bad boundary, truncated, not multipart) is refused
with 400 and nothing is stored. Each part is then checked and scanned by the C-STORE ingest
path (``archive.store.prepare``: File Meta, transfer syntax, native scan of every element),
and all good instances are handed to the group committer together; the answer is sent only
once every one of them is durable (fdatasync + index commit), as for a C-STORE response.

Status (PS3.18 10.5.3): 200 all stored, 202 some stored and some failed, 409 none stored;
the body is the Store Instances Response Module in DICOM JSON.
"""
from __future__ import annotations

import asyncio
import logging

from aiohttp import BodyPartReader, MultipartReader, web

from pacsnode._native import header
from pacsnode.dicom.status import (
    CANNOT_UNDERSTAND,
    DOES_NOT_MATCH_SOP_CLASS,
    OUT_OF_RESOURCES,
    PROCESSING_FAILURE,
    TRANSFER_SYNTAX_NOT_SUPPORTED,
)
from pacsnode.dicom.uids import STORAGE_TRANSFER_SYNTAXES
from pacsnode.errors import PacsError
from pacsnode.services.store import PendingInstance
from pacsnode.web.app import ARCHIVE, DICOMWEB_ROOT, base_url, run_blocking
from pacsnode.web.dicomjson import dumps, element_json
from pacsnode.web.media import (
    DICOM,
    MULTIPART_RELATED,
    accepts_json,
    parse_accept,
    parse_media_type,
)

LOGGER = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 2 * 1024**3
_CHUNK = 1024 * 1024
# Failure Reasons (PS3.18 Table 10.5.3-3 / PS3.4 Annex B).

_SOP_CLASS, _SOP_INSTANCE, _SYNTAX = 0x00020002, 0x00020003, 0x00020010


class Malformed(Exception):
    pass


class Failure(Exception):
    def __init__(self, reason: int, why: str, sop_class: str = "", sop_instance: str = "") -> None:
        super().__init__(why)
        self.reason = reason
        self.sop_class = sop_class
        self.sop_instance = sop_instance


async def read_parts(request: web.Request) -> list[tuple[str | None, bytearray]]:
    """Every part's Content-Type and bytes; Malformed if the body is not a complete multipart."""
    reader = MultipartReader(request.headers, request.content)
    parts: list[tuple[str | None, bytearray]] = []
    total = 0
    try:
        while True:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                raise Malformed("nested multipart parts are not supported")
            data = bytearray()
            while True:
                chunk = await part.read_chunk(_CHUNK)
                if not chunk:
                    break
                total += len(chunk)
                if total > MAX_REQUEST_BYTES:
                    raise web.HTTPRequestEntityTooLarge(max_size=MAX_REQUEST_BYTES, actual_size=total)
                data += chunk
            parts.append((part.headers.get("Content-Type"), data))
    except web.HTTPException:
        raise
    except (ValueError, AssertionError, RuntimeError, asyncio.IncompleteReadError) as exc:
        raise Malformed(f"malformed multipart body: {exc}") from None
    except Exception as exc:  # aiohttp's payload errors (truncated body)
        raise Malformed(f"malformed multipart body: {type(exc).__name__}: {exc}") from None
    if not reader.at_eof():
        raise Malformed("the multipart body has no closing boundary")
    return parts


def _text(raw: bytes | None) -> str:
    return (raw or b"").rstrip(b"\x00 ").decode("ascii", "replace")


def prepare_part(archive, content_type: str | None, data: bytearray, study: str | None) -> PendingInstance:
    """Check and scan one part (the C-STORE ingest path); raises Failure."""
    if content_type is not None and parse_media_type(content_type).type != DICOM:
        raise Failure(CANNOT_UNDERSTAND, f"part of type {content_type!r}, not {DICOM}")
    try:
        meta, offset = header.read_file_meta(data)
    except Exception as exc:
        raise Failure(CANNOT_UNDERSTAND, f"unreadable File Meta Information: {exc}") from None
    if not offset:
        raise Failure(CANNOT_UNDERSTAND, "not a DICOM Part 10 object (no File Meta Information)")
    sop_class, sop_instance, syntax = (_text(meta.get(t)) for t in (_SOP_CLASS, _SOP_INSTANCE, _SYNTAX))
    if syntax not in STORAGE_TRANSFER_SYNTAXES:
        raise Failure(TRANSFER_SYNTAX_NOT_SUPPORTED, f"transfer syntax {syntax or '(none)'} not supported", sop_class, sop_instance)
    try:
        pending = archive.store.prepare(memoryview(data)[offset:], syntax, sop_class or None, sop_instance or None)
    except PacsError as exc:
        raise Failure(exc.dimse_status, str(exc), sop_class, sop_instance) from None
    except Exception as exc:
        LOGGER.exception("STOW-RS part %s failed", sop_instance)
        raise Failure(PROCESSING_FAILURE, f"cannot process the dataset: {exc}", sop_class, sop_instance) from None
    if study is not None and pending.record.study_uid != study:
        raise Failure(
            DOES_NOT_MATCH_SOP_CLASS, f"Study Instance UID {pending.record.study_uid} is not the target study {study}",
            pending.record.sop_class_uid, pending.record.sop_instance_uid,
        )  # fmt: skip
    return pending


def _prepare_all(archive, parts, study):
    out = []
    for content_type, data in parts:
        try:
            out.append(prepare_part(archive, content_type, data, study))
        except Failure as failure:
            out.append(failure)
    return out


def _ref(sop_class: str, sop_instance: str) -> dict:
    return {"00081150": element_json("UI", sop_class), "00081155": element_json("UI", sop_instance)}


async def store_instances(request: web.Request) -> web.Response:
    study = request.match_info.get("study")
    ctype = parse_media_type(request.headers.get("Content-Type", ""))
    if ctype.type != MULTIPART_RELATED:
        raise web.HTTPUnsupportedMediaType(text=f'STOW-RS takes multipart/related; type="{DICOM}"')
    if ctype.inner is not None and ctype.inner != DICOM:
        raise web.HTTPUnsupportedMediaType(text=f"parts of type {ctype.inner} are not supported; send {DICOM}")
    if not ctype.params.get("boundary"):
        raise web.HTTPBadRequest(text="multipart/related without a boundary")
    if not accepts_json(parse_accept(request.headers.get("Accept"))):
        raise web.HTTPNotAcceptable(text="the STOW-RS response is available as application/dicom+json only")
    try:
        parts = await read_parts(request)
    except Malformed as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    if not parts:
        raise web.HTTPBadRequest(text="the multipart body holds no part")

    archive = request.app[ARCHIVE]
    prepared = await run_blocking(request, _prepare_all, archive, parts, study)
    del parts
    pending = [p for p in prepared if isinstance(p, PendingInstance)]
    # All good instances go to the committer at once: one fdatasync and index commit for the lot.
    futures = [asyncio.wrap_future(archive.committer.submit(p)) for p in pending]
    results = await asyncio.gather(*futures, return_exceptions=True)
    outcome = dict(zip(map(id, pending), results))

    base = base_url(request)
    referenced, failed = [], []
    studies = set()
    for item in prepared:
        if isinstance(item, Failure):
            LOGGER.warning("STOW-RS instance %s refused: %s", item.sop_instance or "(unknown)", item)
            failed.append({**_ref(item.sop_class, item.sop_instance), "00081197": element_json("US", item.reason)})
            continue
        rec = item.record
        result = outcome[id(item)]
        if isinstance(result, BaseException):
            reason = result.dimse_status if isinstance(result, PacsError) else (
                OUT_OF_RESOURCES if isinstance(result, OSError) else PROCESSING_FAILURE
            )  # fmt: skip
            LOGGER.warning("STOW-RS instance %s refused: %s", rec.sop_instance_uid, result)
            failed.append({**_ref(rec.sop_class_uid, rec.sop_instance_uid), "00081197": element_json("US", reason)})
            continue
        stored = result.record
        studies.add(stored.study_uid)
        url = f"{base}/studies/{stored.study_uid}/series/{stored.series_uid}/instances/{stored.sop_instance_uid}"
        referenced.append({**_ref(stored.sop_class_uid, stored.sop_instance_uid), "00081190": element_json("UR", url)})

    body: dict = {}
    target = study or (next(iter(studies)) if len(studies) == 1 else None)
    if target is not None:
        body["00081190"] = element_json("UR", f"{base}/studies/{target}")
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    if referenced:
        body["00081199"] = {"vr": "SQ", "Value": referenced}
    status = 200 if not failed else 202 if referenced else 409
    LOGGER.info("STOW-RS from %s: stored %d, failed %d", request.remote, len(referenced), len(failed))
    return web.Response(status=status, body=dumps(body), content_type="application/dicom+json")


def add_routes(app: web.Application) -> None:
    app.router.add_post(DICOMWEB_ROOT + "/studies", store_instances)
    app.router.add_post(DICOMWEB_ROOT + "/studies/{study}", store_instances)
