"""Rendered images and thumbnails (PS3.18 10.4.1.1.3, 8.3.5): JPEG, PNG or GIF.

A frame is decoded by the native pixel path, the Modality LUT (Rescale Slope / Intercept) and
a VOI window (the ``window`` parameter, else the instance's first Window Center / Width, else
the frame's range) map it to 8 bits (PS3.3 C.11.2.1.2, LINEAR, LINEAR_EXACT or SIGMOID);
MONOCHROME1 is inverted; the image is cropped and scaled to ``viewport`` (aspect kept) and
encoded with Pillow at ``quality``.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from aiohttp import web

from pacsnode._native import header
from pacsnode.dicom.syntax import encoding_of, inflated
from pacsnode.index.base import InstanceRecord
from pacsnode.web.app import DICOMWEB_ROOT, run_blocking
from pacsnode.web.frames import NoPixelData, pixel_source, split_part10
from pacsnode.web.media import parse_accept
from pacsnode.web.wado import INSTANCE, SERIES, STUDY, parse_frame_list, read_blob, resolve

RENDERED_TYPES = ("image/jpeg", "image/png", "image/gif")
THUMBNAIL_SIZE = 128
_VOI_TAGS = (0x00281050, 0x00281051, 0x00281052, 0x00281053, 0x00281056)  # ascending, for the scanner


@dataclass
class RenderParams:
    media_type: str = "image/jpeg"
    quality: int = 90
    window: tuple[float, float, str] | None = None
    viewport: tuple[int, int] | None = None
    region: tuple[float, float, float, float] | None = None  # sx, sy, sw, sh in source pixels


def _floats(text: str, name: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip() != ""]
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name}={text!r}: numbers separated by commas") from None


def parse_params(request: web.Request, default_size: int | None = None) -> RenderParams:
    params = RenderParams()
    ranges = parse_accept(request.headers.get("Accept"))
    for r in ranges:
        chosen = next((t for t in RENDERED_TYPES if r.matches(t)), None)
        if chosen:
            params.media_type = chosen
            break
    else:
        raise web.HTTPNotAcceptable(text=f"rendered images are available as {', '.join(RENDERED_TYPES)}")
    q = request.query
    if "quality" in q:
        try:
            params.quality = int(q["quality"])
        except ValueError:
            raise web.HTTPBadRequest(text="quality: a number from 1 to 100") from None
        if not 1 <= params.quality <= 100:
            raise web.HTTPBadRequest(text="quality: a number from 1 to 100")
    if "window" in q:
        parts = q["window"].split(",")
        numbers = _floats(",".join(parts[:2]), "window")
        function = parts[2].strip().upper() if len(parts) > 2 else "LINEAR"
        if len(numbers) != 2 or numbers[1] <= 0 or function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
            raise web.HTTPBadRequest(text="window=center,width[,linear|linear-exact|sigmoid] with width > 0")
        params.window = (numbers[0], numbers[1], function.replace("-", "_"))
    if "viewport" in q:
        numbers = _floats(q["viewport"], "viewport")
        if len(numbers) not in (2, 6) or numbers[0] <= 0 or numbers[1] <= 0:
            raise web.HTTPBadRequest(text="viewport=vw,vh[,sx,sy,sw,sh]")
        params.viewport = (int(numbers[0]), int(numbers[1]))
        if len(numbers) == 6:
            params.region = tuple(numbers[2:])  # type: ignore[assignment]
    elif default_size:
        params.viewport = (default_size, default_size)
    return params


def _ds_numbers(raw: bytes | None) -> list[float]:
    if not raw:
        return []
    out = []
    for part in raw.decode("ascii", "replace").strip(" \x00").split("\\"):
        try:
            out.append(float(part))
        except ValueError:
            pass
    return out


def voi_values(dataset, transfer_syntax: str) -> dict:
    implicit, little = encoding_of(transfer_syntax)
    raw = header.scan_dataset(inflated(dataset, transfer_syntax), _VOI_TAGS, implicit, little)
    centers, widths = _ds_numbers(raw.get(0x00281050)), _ds_numbers(raw.get(0x00281051))
    intercept, slope = _ds_numbers(raw.get(0x00281052)), _ds_numbers(raw.get(0x00281053))
    function = (raw.get(0x00281056) or b"").decode("ascii", "replace").strip(" \x00").upper() or "LINEAR"
    return {
        "center": centers[0] if centers else None,
        "width": widths[0] if widths else None,
        "intercept": intercept[0] if intercept else 0.0,
        "slope": slope[0] if slope else 1.0,
        "function": function if function in ("LINEAR", "LINEAR_EXACT", "SIGMOID") else "LINEAR",
    }


def apply_window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """PS3.3 C.11.2.1.2 / C.11.2.1.3.2 to 0..255."""
    if function == "SIGMOID":
        out = 255.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    elif function == "LINEAR_EXACT":
        out = ((values - center) / width + 0.5) * 255.0
    else:
        width = max(width, 1.0)
        out = ((values - (center - 0.5)) / max(width - 1.0, 1e-6) + 0.5) * 255.0
    return np.clip(out, 0, 255).astype(np.uint8)


def render_frame(blob: bytes, rec: InstanceRecord, index: int, params: RenderParams) -> bytes:
    from PIL import Image

    _, dataset = split_part10(blob)
    source = pixel_source(dataset, rec.transfer_syntax)
    if index >= source.number_of_frames:
        raise IndexError(index)
    arr, d = source.frame_array(index)
    if d.samples_per_pixel == 1:
        voi = voi_values(dataset, rec.transfer_syntax)
        values = arr.astype(np.float32) * voi["slope"] + voi["intercept"]
        if params.window is not None:
            center, width, function = params.window
        elif voi["center"] is not None and voi["width"] and voi["width"] > 0:
            center, width, function = voi["center"], voi["width"], voi["function"]
        else:
            lo, hi = float(values.min()), float(values.max())
            center, width, function = (lo + hi) / 2, max(hi - lo, 1.0), "LINEAR_EXACT"
        image = apply_window(values, center, width, function)
        if d.photometric_interpretation == "MONOCHROME1":
            image = 255 - image
        pil = Image.fromarray(image, "L")
    else:
        rgb = arr
        if rgb.dtype != np.uint8:
            shift = max(d.bits_stored - 8, 0)
            rgb = np.clip(rgb.astype(np.int64) >> shift, 0, 255).astype(np.uint8)
        pil = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    if params.region is not None:
        sx, sy, sw, sh = params.region
        box = (int(sx), int(sy), int(sx + (sw or pil.width - sx)), int(sy + (sh or pil.height - sy)))
        pil = pil.crop(box)
    if params.viewport is not None:
        vw, vh = params.viewport
        scale = min(vw / pil.width, vh / pil.height)
        size = (max(1, round(pil.width * scale)), max(1, round(pil.height * scale)))
        if size != pil.size:
            pil = pil.resize(size, Image.Resampling.BILINEAR if scale < 1 else Image.Resampling.BICUBIC)
    out = io.BytesIO()
    if params.media_type == "image/png":
        pil.save(out, "PNG", compress_level=1)
    elif params.media_type == "image/gif":
        pil.save(out, "GIF")
    else:
        pil.save(out, "JPEG", quality=params.quality)
    return out.getvalue()


def _has_pixels(rec: InstanceRecord) -> bool:
    return bool(rec.attrs.get("Rows")) and bool(rec.attrs.get("Columns"))


async def _render(request: web.Request, rec: InstanceRecord, index: int, params: RenderParams) -> web.Response:
    blob = await read_blob(request, rec)
    try:
        body = await run_blocking(request, render_frame, blob, rec, index, params)
    except NoPixelData:
        raise web.HTTPNotFound(text=f"instance {rec.sop_instance_uid} has no pixel data") from None
    except IndexError:
        raise web.HTTPNotFound(text=f"instance {rec.sop_instance_uid} has no frame {index + 1}") from None
    except (NotImplementedError, ValueError) as exc:
        raise web.HTTPNotAcceptable(text=f"cannot render {rec.sop_instance_uid}: {exc}") from None
    return web.Response(body=body, content_type=params.media_type, headers={"Cache-Control": "private, max-age=3600"})


def _representative(records: list[InstanceRecord]) -> InstanceRecord:
    """The middle image of the first series that has images."""
    images = [r for r in records if _has_pixels(r)]
    if not images:
        raise web.HTTPNotFound(text="no image to render")
    first_series = [r for r in images if r.series_uid == images[0].series_uid]
    return first_series[len(first_series) // 2]


def _handler(thumbnail: bool, frames: bool):
    async def handler(request: web.Request) -> web.Response:
        params = parse_params(request, THUMBNAIL_SIZE if thumbnail else None)
        records = resolve(request)
        rec = records[0] if "instance" in request.match_info else _representative(records)
        index = 0
        if frames:
            numbers = parse_frame_list(request.match_info["frames"])
            if len(numbers) != 1:
                raise web.HTTPBadRequest(text="render one frame at a time")
            index = numbers[0] - 1
        elif "instance" in request.match_info and rec.attrs.get("NumberOfFrames"):
            index = 0
        return await _render(request, rec, index, params)

    return handler


def add_routes(app: web.Application) -> None:
    root = DICOMWEB_ROOT
    app.router.add_get(root + INSTANCE + "/rendered", _handler(False, False))
    app.router.add_get(root + INSTANCE + "/frames/{frames}/rendered", _handler(False, True))
    # Study and series "rendered" give the representative image (one image, not a multipart).
    app.router.add_get(root + STUDY + "/rendered", _handler(False, False))
    app.router.add_get(root + SERIES + "/rendered", _handler(False, False))
    for path in (STUDY, SERIES, INSTANCE):
        app.router.add_get(root + path + "/thumbnail", _handler(True, False))
    app.router.add_get(root + INSTANCE + "/frames/{frames}/thumbnail", _handler(True, True))
