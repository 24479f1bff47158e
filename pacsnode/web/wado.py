"""WADO-RS (PS3.18 10.4): instances, metadata, frames and bulk data of stored studies.

Instances go out as multipart/related; type="application/dicom", each part the stored Part 10
bytes untouched when the Accept header allows the stored transfer syntax, else transcoded to
Explicit VR Little Endian by the pixel pipeline. Parts are written as they are read: memory
holds one instance, whatever the size of the study. Frames are sent as stored (compressed)
when accepted, else decoded to uncompressed little endian by the native pixel path.
"""
from __future__ import annotations

import asyncio
import logging
import re
import struct
from collections import OrderedDict
from io import BytesIO
from pathlib import Path

from aiohttp import web
from pydicom import dcmread

from pacsnode.dicom.meta import build_file_meta
from pacsnode.dicom.uids import DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_BE, EXPLICIT_VR_LE
from pacsnode.index.base import InstanceRecord
from pacsnode.web.app import ARCHIVE, DICOMWEB_ROOT, base_url, run_blocking
from pacsnode.web.dicomjson import dataset_json, dumps, element_json
from pacsnode.storage.segments import parse_segment_id
from pacsnode.web.frames import DECODABLE, FrameMap, NoPixelData, PixelSource, frame_map, pixel_source, split_part10
from pacsnode.web.media import (
    DICOM,
    MULTIPART_RELATED,
    NATIVE_SYNTAXES,
    OCTET_STREAM,
    MediaRange,
    accepts_json,
    frame_media_type,
    parse_accept,
)
from pacsnode.web.multipart import MultipartStream, multipart_response, send_multipart

LOGGER = logging.getLogger(__name__)

# Instances up to this size are read on the event loop (one pread from the page cache);
# larger ones in the thread pool, and files of their own are streamed in slices.
INLINE_READ = 2 * 1024 * 1024
STREAM_FILE = 8 * 1024 * 1024
_SLICE = 1024 * 1024
_PIXEL_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}

STUDY = "/studies/{study}"
SERIES = STUDY + "/series/{series}"
INSTANCE = SERIES + "/instances/{instance}"


# -- resources ----------------------------------------------------------------------------


def _order(records: list[InstanceRecord]) -> list[InstanceRecord]:
    def key(r: InstanceRecord):
        number = r.attrs.get("InstanceNumber")
        return (r.series_uid, number if isinstance(number, int) else 0, r.sop_instance_uid)

    return sorted(records, key=key)


def resolve(request: web.Request) -> list[InstanceRecord]:
    """The instances the path names (study, series or instance), or 404."""
    index = request.app[ARCHIVE].index
    study = request.match_info["study"]
    series = request.match_info.get("series")
    instance = request.match_info.get("instance")
    if instance is not None:
        rec = index.get_instance(instance)
        if rec is None or rec.study_uid != study or rec.series_uid != series:
            raise web.HTTPNotFound(text=f"no instance {instance} in series {series} of study {study}")
        return [rec]
    if series is not None:
        records = [r for r in index.instances_under("SERIES", series) if r.study_uid == study]
        if not records:
            raise web.HTTPNotFound(text=f"no series {series} in study {study}")
        return _order(records)
    records = list(index.instances_under("STUDY", study))
    if not records:
        raise web.HTTPNotFound(text=f"no study {study}")
    return _order(records)


async def read_blob(request: web.Request, rec: InstanceRecord) -> bytes:
    """The stored Part 10 bytes; large ones are read off the loop."""
    blobs = request.app[ARCHIVE].blobs
    if rec.size <= INLINE_READ:
        return blobs.read(rec.blob_id)
    return await run_blocking(request, blobs.read, rec.blob_id)


async def _file_slices(request: web.Request, path: Path):
    fh = await run_blocking(request, open, path, "rb")
    try:
        while True:
            chunk = await run_blocking(request, fh.read, _SLICE)
            if not chunk:
                return
            yield chunk
    finally:
        fh.close()


# -- negotiation --------------------------------------------------------------------------


def transcodable(syntax: str) -> bool:
    return syntax in DECODABLE


def instance_syntax(ranges: list[MediaRange], stored: str) -> str | None:
    """The transfer syntax to send a stored instance in, or None if none is acceptable.

    PS3.18 8.7.3: application/dicom without a transfer-syntax means Explicit VR Little Endian;
    ``*`` means as stored. We never compress: a compressed syntax is sent only as stored.
    """
    for r in ranges:
        if r.type == MULTIPART_RELATED:
            if (r.inner or DICOM) not in (DICOM, "*/*", "application/*"):
                continue
        elif r.type not in (DICOM, "*/*", "application/*", "multipart/*"):
            continue
        ts = r.transfer_syntax
        if ts == "*" or ts == stored:
            return stored
        if ts in (None, "", EXPLICIT_VR_LE):
            if stored == EXPLICIT_VR_LE:
                return stored
            if transcodable(stored):
                return EXPLICIT_VR_LE
    return None


class FrameAnswer:
    """How frames go out: ``raw`` (stored encoded bytes) or uncompressed, with the part type."""

    def __init__(self, raw: bool, content_type: str, multipart: bool, inner: str) -> None:
        self.raw = raw
        self.content_type = content_type
        self.multipart = multipart
        self.inner = inner


def frame_answer(ranges: list[MediaRange], stored: str, count: int) -> FrameAnswer | None:
    compressed = stored not in NATIVE_SYNTAXES
    stored_type = frame_media_type(stored) if compressed else OCTET_STREAM
    native = FrameAnswer(False, f"{OCTET_STREAM}; transfer-syntax={EXPLICIT_VR_LE}", True, OCTET_STREAM)

    def raw(label: str, multipart: bool) -> FrameAnswer:
        return FrameAnswer(True, f"{label}; transfer-syntax={stored}", multipart, label)

    for r in ranges:
        multipart = r.type == MULTIPART_RELATED or r.type in ("*/*", "multipart/*")
        if r.type == MULTIPART_RELATED:
            wanted = r.inner or OCTET_STREAM
        elif r.type in ("*/*", "multipart/*"):
            wanted = OCTET_STREAM
        else:
            if count != 1:
                continue  # single part answers hold one frame
            wanted = r.type
        ts = r.transfer_syntax
        if wanted in (OCTET_STREAM, "application/*"):
            if ts == "*":
                return raw(OCTET_STREAM, multipart) if compressed else _with(native, multipart)
            if ts in (None, "", EXPLICIT_VR_LE) and (not compressed or transcodable(stored)):
                return _with(native, multipart)
            if compressed and ts == stored:
                return raw(OCTET_STREAM, multipart)
            continue
        if wanted in ("*/*", "image/*", "video/*"):
            if compressed and (wanted == "*/*" or stored_type.startswith(wanted[:-1])) and ts in (None, "", "*", stored):
                return raw(stored_type, multipart)
            if not compressed and wanted == "*/*":
                return _with(native, multipart)
            continue
        if compressed and wanted == stored_type and ts in (None, "", "*", stored):
            return raw(stored_type, multipart)
    return None


def _with(answer: FrameAnswer, multipart: bool) -> FrameAnswer:
    return FrameAnswer(answer.raw, answer.content_type, multipart, answer.inner)


# -- instances ----------------------------------------------------------------------------


def transcode_part10(blob: bytes, rec: InstanceRecord) -> bytes:
    from pacsnode.pixels import transcode_to_explicit_le

    _, dataset = split_part10(blob)
    data = transcode_to_explicit_le(dataset, rec.transfer_syntax)
    return build_file_meta(rec.sop_class_uid, rec.sop_instance_uid, EXPLICIT_VR_LE) + data


async def retrieve_instances(request: web.Request) -> web.StreamResponse:
    records = resolve(request)
    ranges = parse_accept(request.headers.get("Accept"))
    plan = [(rec, instance_syntax(ranges, rec.transfer_syntax)) for rec in records]
    if all(ts is None for _, ts in plan):
        raise web.HTTPNotAcceptable(
            text="no acceptable media type: application/dicom in the stored transfer syntax"
            " or Explicit VR Little Endian (1.2.840.10008.1.2.1) are available"
        )
    skipped = sum(1 for _, ts in plan if ts is None)
    headers = {}
    if skipped:
        headers["Warning"] = f'299 pacsnode "{skipped} instance(s) not available in an acceptable transfer syntax"'
    stream = MultipartStream(request, DICOM, headers=headers)
    archive = request.app[ARCHIVE]
    for rec, ts in plan:
        if ts is None:
            continue
        content_type = f"{DICOM}; transfer-syntax={ts}"
        if ts == rec.transfer_syntax:
            path = archive.blobs.local_path(rec.blob_id)
            if path is not None and rec.size > STREAM_FILE:
                await stream.part_from_chunks(content_type, _file_slices(request, path))
                continue
            await stream.part(content_type, await read_blob(request, rec))
            continue
        blob = await read_blob(request, rec)
        try:
            data = await run_blocking(request, transcode_part10, blob, rec)
        except Exception:
            LOGGER.exception("cannot transcode %s from %s", rec.sop_instance_uid, rec.transfer_syntax)
            if not stream.started and len(plan) == 1:
                raise web.HTTPNotAcceptable(text="the instance cannot be transcoded to Explicit VR Little Endian")
            continue
        await stream.part(content_type, data)
    return await stream.finish()


# -- metadata -----------------------------------------------------------------------------


def _bulk_base(base: str, rec: InstanceRecord) -> str:
    return f"{base}/studies/{rec.study_uid}/series/{rec.series_uid}/instances/{rec.sop_instance_uid}/bulkdata/"


def instance_metadata(archive, rec: InstanceRecord, base: str) -> dict:
    """One instance's DICOM JSON: every attribute, large binary values as BulkDataURIs."""
    prefix = _bulk_base(base, rec)
    path = archive.blobs.local_path(rec.blob_id)
    fp = open(path, "rb") if path is not None else BytesIO(archive.blobs.read(rec.blob_id))
    with fp:
        ds = dcmread(fp, stop_before_pixels=True)
        pixel_tag = _pixel_tag_at(fp, rec.transfer_syntax)
    obj = dataset_json(ds, lambda p: prefix + p)
    if pixel_tag is None and rec.transfer_syntax == DEFLATED_EXPLICIT_VR_LE and "Rows" in ds:
        pixel_tag = 0x7FE00010
    if pixel_tag is not None:
        vr = "OB" if rec.transfer_syntax not in NATIVE_SYNTAXES or ds.get("BitsAllocated", 16) <= 8 else "OW"
        vr = {0x7FE00008: "OF", 0x7FE00009: "OD"}.get(pixel_tag, vr)
        obj[f"{pixel_tag:08X}"] = {"vr": vr, "BulkDataURI": prefix + f"{pixel_tag:08X}"}
    obj["00083002"] = element_json("UI", rec.transfer_syntax)  # Available Transfer Syntax UID
    return dict(sorted(obj.items()))


def _pixel_tag_at(fp, transfer_syntax: str) -> int | None:
    """The pixel data tag where pydicom stopped (stop_before_pixels), if any."""
    if transfer_syntax == DEFLATED_EXPLICIT_VR_LE:
        return None
    head = fp.read(4)
    if len(head) < 4:
        return None
    group, element = struct.unpack(">HH" if transfer_syntax == EXPLICIT_VR_BE else "<HH", head)
    tag = (group << 16) | element
    return tag if tag in _PIXEL_TAGS else None


def _metadata_batch(archive, records: list[InstanceRecord], base: str) -> list[bytes]:
    out = []
    for rec in records:
        try:
            out.append(dumps(instance_metadata(archive, rec, base)))
        except Exception:
            LOGGER.exception("cannot read metadata of %s", rec.sop_instance_uid)
    return out


async def retrieve_metadata(request: web.Request) -> web.StreamResponse:
    if not accepts_json(parse_accept(request.headers.get("Accept"))):
        raise web.HTTPNotAcceptable(text="metadata is available as application/dicom+json only")
    records = resolve(request)
    archive = request.app[ARCHIVE]
    base = base_url(request)
    if len(records) == 1:
        items = await run_blocking(request, _metadata_batch, archive, records, base)
        return web.Response(body=b"[" + b",".join(items) + b"]", content_type="application/dicom+json")
    response = web.StreamResponse()
    response.content_type = "application/dicom+json"
    response.enable_chunked_encoding()
    await response.prepare(request)
    first = True
    # Batches keep the thread pool busy without holding the whole study's metadata in memory.
    batch = 16
    pending = None
    for start in range(0, len(records), batch):
        job = run_blocking(request, _metadata_batch, archive, records[start : start + batch], base)
        task = asyncio.ensure_future(job)
        if pending is not None:
            first = await _write_items(response, await pending, first)
        pending = task
    if pending is not None:
        first = await _write_items(response, await pending, first)
    await response.write(b"[]" if first else b"]")
    await response.write_eof()
    return response


async def _write_items(response: web.StreamResponse, items: list[bytes], first: bool) -> bool:
    for item in items:
        await response.write((b"[" if first else b",") + item)
        first = False
    return first


# -- frames and bulk data ------------------------------------------------------------------


def parse_frame_list(text: str) -> list[int]:
    try:
        numbers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise web.HTTPBadRequest(text=f"frame list {text!r}: comma-separated numbers from 1") from None
    if not numbers or any(n < 1 for n in numbers):
        raise web.HTTPBadRequest(text=f"frame list {text!r}: comma-separated numbers from 1")
    return numbers


def _frames_bytes(source: PixelSource | FrameMap, numbers: list[int], raw: bool) -> list[bytes]:
    if isinstance(source, FrameMap):
        return [source.read(n - 1) if raw else source.native_frame(n - 1) for n in numbers]
    return [source.encoded_frame(n - 1) if raw else source.native_frame(n - 1) for n in numbers]


# Frame locations of recently asked instances (a viewer asks each frame of a multi-frame
# instance in turn): later frames are read in place, one pread each.
_MAPS: OrderedDict[str, FrameMap] = OrderedDict()
_MAPS_MAX = 4096


def _blob_file(blobs, blob_id: str) -> tuple[str, int] | None:
    parsed = parse_segment_id(blob_id)
    if parsed is not None:
        return str(blobs.segments / f"{parsed[0]}.seg"), parsed[1]
    path = blobs.local_path(blob_id)
    return (str(path), 0) if path is not None else None


async def frame_source(request: web.Request, rec: InstanceRecord) -> PixelSource | FrameMap:
    key = rec.blob_id
    cached = _MAPS.get(key)
    if cached is not None:
        _MAPS.move_to_end(key)
        return cached
    blob = await read_blob(request, rec)
    try:
        _, dataset = split_part10(blob)
        source = pixel_source(dataset, rec.transfer_syntax)
    except NoPixelData:
        raise web.HTTPNotFound(text=f"instance {rec.sop_instance_uid} has no pixel data") from None
    except (ValueError, NotImplementedError) as exc:
        raise web.HTTPNotFound(text=f"instance {rec.sop_instance_uid}: {exc}") from None
    where = _blob_file(request.app[ARCHIVE].blobs, rec.blob_id)
    fmap = frame_map(blob, source, *where) if where is not None else None
    if fmap is not None:
        _MAPS[key] = fmap
        if len(_MAPS) > _MAPS_MAX:
            _MAPS.popitem(last=False)
    return source


async def send_frames(request: web.Request, rec: InstanceRecord, numbers: list[int] | None) -> web.StreamResponse:
    ranges = parse_accept(request.headers.get("Accept"))
    answer = frame_answer(ranges, rec.transfer_syntax, len(numbers) if numbers else 2)
    if answer is None:
        raise web.HTTPNotAcceptable(
            text=f"frames are stored in {rec.transfer_syntax}: accept it (or transfer-syntax=*), "
            f"or application/octet-stream (uncompressed)"
        )
    source = await frame_source(request, rec)
    numbers = numbers or list(range(1, source.number_of_frames + 1))
    missing = [n for n in numbers if n > source.number_of_frames]
    if missing:
        raise web.HTTPNotFound(text=f"frames {missing} beyond the {source.number_of_frames} frame(s) of the instance")
    try:
        if answer.raw or not source.encapsulated:
            data = _frames_bytes(source, numbers, answer.raw)  # reads in place: a pread per frame
        else:
            data = await run_blocking(request, _frames_bytes, source, numbers, False)
    except NotImplementedError as exc:
        raise web.HTTPNotAcceptable(text=str(exc)) from None
    if not answer.multipart:
        return web.Response(body=data[0], headers={"Content-Type": answer.content_type})
    return await send_multipart(request, answer.inner, [(answer.content_type, d) for d in data])


async def retrieve_frames(request: web.Request) -> web.StreamResponse:
    numbers = parse_frame_list(request.match_info["frames"])
    (rec,) = resolve(request)
    return await send_frames(request, rec, numbers)


def _bulk_value(archive, rec: InstanceRecord, path: list[str]) -> bytes:
    blob = archive.blobs.read(rec.blob_id)
    ds = dcmread(BytesIO(blob))
    node = ds
    elem = None
    for i, part in enumerate(path):
        if i % 2 == 0:
            tag = int(part, 16)
            if tag not in node:
                raise KeyError(part)
            elem = node[tag]
            if i + 1 < len(path):
                node = elem.value
        else:
            node = node[int(part)]
    if elem is None or not isinstance(elem.value, (bytes, bytearray)):
        raise KeyError("/".join(path))
    return bytes(elem.value)


async def retrieve_bulkdata(request: web.Request) -> web.StreamResponse:
    (rec,) = resolve(request)
    path = [p for p in request.match_info["path"].split("/") if p]
    if not path or len(path) % 2 == 0 or not all(re.fullmatch(r"[0-9A-Fa-f]{8}", p) for p in path[::2]):
        raise web.HTTPNotFound(text="bulk data path: TAG or TAG/ITEM/TAG...")
    if len(path) == 1 and int(path[0], 16) == 0x7FE00010:
        return await send_frames(request, rec, None)
    ranges = parse_accept(request.headers.get("Accept"))
    if not any(r.matches(MULTIPART_RELATED) or r.matches(OCTET_STREAM) for r in ranges):
        raise web.HTTPNotAcceptable(text="bulk data is available as application/octet-stream")
    try:
        value = await run_blocking(request, _bulk_value, request.app[ARCHIVE], rec, path)
    except (KeyError, IndexError, ValueError):
        raise web.HTTPNotFound(text=f"no bulk data at {'/'.join(path)}") from None
    multipart = any(r.type in (MULTIPART_RELATED, "*/*") for r in ranges)
    if not multipart:
        return web.Response(body=value, content_type=OCTET_STREAM)
    return multipart_response(OCTET_STREAM, [(OCTET_STREAM, value)])


def add_routes(app: web.Application) -> None:
    root = DICOMWEB_ROOT
    for level in (STUDY, SERIES, INSTANCE):
        app.router.add_get(root + level, retrieve_instances)
        app.router.add_get(root + level + "/metadata", retrieve_metadata)
    app.router.add_get(root + INSTANCE + "/frames/{frames}", retrieve_frames)
    app.router.add_get(root + INSTANCE + "/bulkdata/{path:.+}", retrieve_bulkdata)
