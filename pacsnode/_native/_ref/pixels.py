"""Pure-Python twin of ``pacsnode._native.pixels``.

Encapsulated frame extraction, RLE Lossless decoding and the JPEG-family frame loop, mirroring
pixels.pyx step for step (same names, results and exception classes) so that PACSNODE_PURE=1
runs, and hosts without a compiler, behave exactly like the native build; keep the two in step.
It also holds ``ybr_to_rgb_exact``, pydicom's float32 YBR_FULL to RGB formula, which the native
kernel calls for the few pixels it cannot round with certainty.
"""
from io import BytesIO
from operator import index
from struct import Struct

import numpy as np

from pacsnode.errors import MalformedDatasetError

__all__ = [
    "frame_offsets", "get_frame", "rle_decode", "jpeg_info", "j2k_info", "decode_frames",
    "correct_bits", "ybr_to_rgb",
]

ITEM = 0xFFFEE000
SEQUENCE_DELIMITER = 0xFFFEE0DD
UNDEFINED_LENGTH = 0xFFFFFFFF

_TAG = Struct("<HH").unpack_from
_U32 = Struct("<I").unpack_from
_U64 = Struct("<Q").unpack_from
_U16BE = Struct(">H").unpack_from


def _byte_view(buf, writable=False):
    """``buf`` as flat unsigned bytes, accepting what Cython's PyBUF_SIMPLE request accepts."""
    view = memoryview(buf)
    if not view.c_contiguous:
        raise BufferError("buffer is not C-contiguous")
    if writable and view.readonly:
        raise BufferError("buffer is not writable")
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


def _tag(view, pos):
    group, element = _TAG(view, pos)
    return group << 16 | element


# --------------------------------------------------------------------------------------------
# Frame extraction


def _parse_items(view):
    """(Basic Offset Table offsets, offset of the first fragment item, [(start, length)])."""
    end = len(view)
    if end < 8 or _tag(view, 0) != ITEM:
        raise MalformedDatasetError("encapsulated Pixel Data does not start with a Basic Offset Table item")
    value = _U32(view, 4)[0]
    if value % 4:
        raise MalformedDatasetError(f"Basic Offset Table length {value} is not a multiple of 4")
    if value > end - 8:
        raise MalformedDatasetError(
            f"Basic Offset Table of length {value} runs past the end of the Pixel Data ({end})"
        )
    bot = [_U32(view, 8 + 4 * i)[0] for i in range(value // 4)]
    pos = first = 8 + value
    fragments = []
    while pos < end:
        if end - pos < 8:
            raise MalformedDatasetError(
                f"truncated item header at offset {pos} of the Pixel Data ({end} bytes)"
            )
        tag = _tag(view, pos)
        if tag == SEQUENCE_DELIMITER:
            break
        if tag != ITEM:
            raise MalformedDatasetError(
                f"expected a fragment item at offset {pos} of the Pixel Data, got tag {tag:08X}"
            )
        value = _U32(view, pos + 4)[0]
        if value == UNDEFINED_LENGTH:
            raise MalformedDatasetError(
                f"fragment item with undefined length at offset {pos} of the Pixel Data"
            )
        if value > end - pos - 8:
            raise MalformedDatasetError(
                f"fragment of length {value} at offset {pos} runs past the end of the Pixel Data ({end})"
            )
        fragments.append((pos + 8, value))
        pos += 8 + value
    return bot, first, fragments


def _has_eoi(fragment):
    # pydicom's test: b"\xff\xd9" in fragment[-10:] (JPEG EOI, also the JPEG 2000 EOC marker)
    return b"\xff\xd9" in bytes(fragment[-10:])


def _spans(view, bot, first, fragments, n_frames, ext_offsets, ext_lengths):
    """Frames as lists of (start, length) fragment spans; pydicom's generate_fragmented_frames rules."""
    end = len(view)
    offs = None if ext_offsets is None else _byte_view(ext_offsets)
    lens = None if ext_lengths is None else _byte_view(ext_lengths)
    # Extended Offset Table first (one fragment per frame, PS3.3 C.7.6.3.1.8); tables whose
    # counts disagree are ignored, as pydicom does.
    if offs is not None and lens is not None and len(offs) // 8 == len(lens) // 8 and len(offs) >= 8:
        frames = []
        for i in range(len(offs) // 8):
            off = _U64(offs, 8 * i)[0]
            length = _U64(lens, 8 * i)[0]
            if off > end - first or end - first - off < 8 or _tag(view, first + off) != ITEM:
                raise MalformedDatasetError(
                    f"Extended Offset Table entry {i} ({off}) does not point at a fragment item"
                )
            item = first + off + 8
            if length > end - item:
                raise MalformedDatasetError(
                    f"Extended Offset Table length {length} of frame {i} runs past the end of "
                    f"the Pixel Data ({end})"
                )
            frames.append([(item, length)])
        return frames
    n = len(fragments)
    if n == 0:
        raise MalformedDatasetError("encapsulated Pixel Data holds no fragments")
    if bot:
        # A new frame starts with the first fragment at or past the next table offset.
        frames, current, frame, position = [], [], 0, 0
        for span in fragments:
            if frame == len(bot) - 1:
                current.append(span)
                continue
            if position < bot[frame + 1]:
                current.append(span)
            else:
                frames.append(current)
                frame += 1
                current = [span]
            position += span[1] + 8
        frames.append(current)
        return frames
    if n == 1:
        return [[fragments[0]]]
    if n_frames <= 0:
        raise ValueError(
            f"{n} fragments and no offset table: the number of frames is needed to split them"
        )
    if n == n_frames:
        return [[span] for span in fragments]
    if n_frames == 1:
        return [list(fragments)]
    if n < n_frames:
        raise MalformedDatasetError(f"{n} fragments cannot hold {n_frames} frames")
    # More fragments than frames: a frame ends with the fragment holding a JPEG EOI marker.
    frames, current = [], []
    for start, length in fragments:
        current.append((start, length))
        if _has_eoi(view[start : start + length]):
            frames.append(current)
            current = []
    if current:
        frames.append(current)
    return frames


def _frame_count(n_frames):
    if n_frames is None:
        return 0
    count = index(n_frames)
    if count < 0:
        raise ValueError(f"n_frames must not be negative, got {count}")
    return count


def frame_offsets(buf, n_frames, ext_offsets=None, ext_lengths=None):
    """Fragment spans of every frame in an encapsulated Pixel Data value.

    ``buf`` is the element's value (Basic Offset Table item first; a trailing sequence delimiter
    is allowed). ``ext_offsets`` / ``ext_lengths`` are the raw (7FE0,0001) / (7FE0,0002) values.
    Returns one list of ``(start, length)`` spans into ``buf`` per frame, grouped like pydicom's
    ``generate_fragmented_frames`` (so without offset tables more frames than ``n_frames`` may
    come back when the fragments hold them). Raises MalformedDatasetError on truncated or
    invalid items.
    """
    view = _byte_view(buf)
    count = _frame_count(n_frames)
    bot, first, fragments = _parse_items(view)
    return _spans(view, bot, first, fragments, count, ext_offsets, ext_lengths)


def _join(view, spans):
    return b"".join(view[start : start + length] for start, length in spans)


def get_frame(buf, index, n_frames, ext_offsets=None, ext_lengths=None):
    """The encoded bytes of frame ``index`` (its fragments joined); IndexError past the last frame."""
    index = _ssize(index)
    view = _byte_view(buf)
    frames = frame_offsets(buf, n_frames, ext_offsets, ext_lengths)
    if not 0 <= index < len(frames):
        raise IndexError(f"frame index {index} out of range ({len(frames)} frames)")
    return _join(view, frames[index])


def _ssize(value):
    value = index(value)
    if not -(1 << 63) <= value < 1 << 63:
        raise OverflowError("value out of range")
    return value


def _frame_bytes(view, frames):
    """Each frame's encoded bytes (spans checked against the buffer), like pixels.pyx's _Frames."""
    out = []
    for i, spans in enumerate(frames):
        for start, length in spans:
            if start < 0 or length < 0 or start > len(view) - length:
                raise ValueError(f"span ({start}, {length}) of frame {i} is outside the buffer")
        out.append(view[spans[0][0] : spans[0][0] + spans[0][1]] if len(spans) == 1 else _join(view, spans))
    return out


# --------------------------------------------------------------------------------------------
# RLE Lossless (PS3.5 Annex G)


def _rle_segment(src, dst, base, stride, want):
    """Decode PackBits runs into every ``stride``-th byte of dst from ``base``; return the count.

    Stops once ``want`` bytes are out (the rest is padding); a run cut short by the end of the
    segment yields what it has, as pydicom's reference decoder does.
    """
    n = len(src)
    pos = got = 0
    while got < want and pos < n:
        header = src[pos]
        pos += 1
        if header < 128:  # literal run of header + 1 bytes
            count = min(header + 1, n - pos, want - got)
            start = base + got * stride
            dst[start : start + count * stride : stride] = src[pos : pos + count]
            pos += header + 1
            got += count
        elif header > 128:  # the next byte 257 - header times
            if pos >= n:
                break
            count = min(257 - header, want - got)
            start = base + got * stride
            dst[start : start + count * stride : stride] = bytes((src[pos],)) * count
            pos += 1
            got += count
        # header == 128: no operation
    return got


def _rle_frame(frame, src, out, base, pixels, samples, bps):
    """One frame into out: sample planes one after the other, each pixel little endian."""
    n = len(src)
    where = f"RLE frame {frame}"
    if n < 64:
        raise MalformedDatasetError(f"{where} has {n} bytes, less than its 64-byte header")
    segments = _U32(src, 0)[0]
    if segments != samples * bps:
        raise MalformedDatasetError(f"{where} header gives {segments} segments, expected {samples * bps}")
    for s in range(segments):
        # Segment s spans src[offset s : offset s+1] with Python slice semantics, like pydicom's
        # reference decoder: offsets past the end or out of order give short segments.
        start = _U32(src, 4 + 4 * s)[0]
        stop = _U32(src, 8 + 4 * s)[0] if s + 1 < segments else n
        # Segments are sample by sample, most significant byte first (PS3.5 G.2).
        sample, byte = s // bps, bps - 1 - s % bps
        got = _rle_segment(src[start:stop], out, base + sample * pixels * bps + byte, bps, pixels)
        if got < pixels:
            raise MalformedDatasetError(f"{where} segment {s} decodes to {got} bytes, expected {pixels}")


def rle_decode(buf, frames, out, rows, columns, samples_per_pixel, bits_allocated, bits_stored, signed):
    """Decode RLE Lossless frames into ``out``, pydicom's layout: planar, little endian.

    ``frames`` are fragment spans into ``buf`` (from frame_offsets); frame i fills bytes
    ``[i * frame_bytes, (i + 1) * frame_bytes)`` of the writable ``out``, one sample plane after
    the other. When ``bits_stored < bits_allocated`` each value is then corrected like pydicom
    does (unused high bits cleared, or the sign extended when ``signed``).
    """
    rows, columns = _ssize(rows), _ssize(columns)
    samples_per_pixel, bits_allocated, bits_stored = index(samples_per_pixel), index(bits_allocated), index(bits_stored)
    signed = bool(signed)
    view = _byte_view(buf)
    dst = _byte_view(out, writable=True)
    bps = bits_allocated // 8
    if bits_allocated not in (8, 16, 32, 64):
        raise NotImplementedError(f"RLE with {bits_allocated} bits allocated is not supported")
    if not 1 <= bits_stored <= bits_allocated:
        raise ValueError(f"bits stored {bits_stored} outside 1..{bits_allocated}")
    if rows <= 0 or columns <= 0 or samples_per_pixel <= 0:
        raise ValueError("rows, columns and samples per pixel must be positive")
    if samples_per_pixel * bps > 15:
        raise ValueError(
            f"{samples_per_pixel} samples of {bits_allocated} bits need more than 15 RLE segments"
        )
    pixels = rows * columns
    frame_bytes = pixels * samples_per_pixel * bps
    if len(dst) != frame_bytes * len(frames):
        raise ValueError(f"out has {len(dst)} bytes, {len(frames)} frames need {frame_bytes * len(frames)}")
    for i, src in enumerate(_frame_bytes(view, frames)):
        _rle_frame(i, src, dst, i * frame_bytes, pixels, samples_per_pixel, bps)
        if bits_stored < bits_allocated:
            _correct(dst[i * frame_bytes : (i + 1) * frame_bytes], bps, bits_allocated - bits_stored, signed)


# --------------------------------------------------------------------------------------------
# Value fix-ups: pydicom's unused-bits / sign corrections, integer casts


def _correct(view, size, shift, signed):
    if shift <= 0:
        return
    values = np.frombuffer(view, dtype=f"{'i' if signed else 'u'}{size}")
    if shift >= 8 * size:  # numpy shifts everything out
        values[:] = 0
        return
    np.left_shift(values, shift, out=values)
    np.right_shift(values, shift, out=values)


def correct_bits(out, itemsize, shift, signed):
    """In place ``x = (x << shift) >> shift`` on the native integers of ``itemsize`` bytes in ``out``.

    pydicom's correction for unused high bits (and for JPEG-LS / JPEG 2000 signedness): clears
    them, or with ``signed`` extends the sign of the remaining ``8 * itemsize - shift`` bits.
    """
    itemsize, shift, signed = index(itemsize), index(shift), bool(signed)
    view = _byte_view(out, writable=True)
    if itemsize not in (1, 2, 4, 8):
        raise ValueError(f"itemsize must be 1, 2, 4 or 8, got {itemsize}")
    if len(view) % itemsize:
        raise ValueError(f"buffer of {len(view)} bytes is not a whole number of {itemsize}-byte values")
    _correct(view, itemsize, shift, signed)


# --------------------------------------------------------------------------------------------
# JPEG family and JPEG 2000: codestream parameters (pydicom's parsers) and the frame loop

# pydicom's _SOF: FFC0-FFCF except DHT (C4), JPG (C8), DAC (CC); plus JPEG-LS SOF55 (F7)
_SOF = frozenset(bytes((0xFF, m)) for m in (*range(0xC0, 0xD0), 0xF7) if m not in (0xC4, 0xC8, 0xCC))


def _jpeg_params(s):
    """pydicom's _get_jpg_parameters, reduced to what decoding uses; None where it returns {}."""
    n = len(s)
    if s[0:2] != b"\xff\xd8":
        return None
    off = 2
    app = {}
    while bytes(s[off : off + 2]) not in _SOF:
        if n - off < 4:
            return None
        length = _U16BE(s, off + 2)[0]
        if s[off] == 0xFF and s[off + 1] & 0xF0 == 0xE0:
            # A later APPn replaces an earlier one.
            app[s[off + 1]] = bytes(s[off + 4 : off + 2 + length]).startswith(b"JFIF")
        off += length + 2
    ls = s[off + 1] == 0xF7
    off += 2  # SOF length, then precision, rows, columns, component count, components
    if n - off < 8:
        return None
    precision = s[off + 2]
    comps = s[off + 7]
    off += 8
    if comps and n - off <= 3 * (comps - 1):
        return None
    ids = [s[off + 3 * i] for i in range(comps)]
    rgb_ids = ids in ([82, 71, 66], [114, 103, 98])
    if ls:  # pydicom then reads NEAR and ILV from the SOS; failing that it returns {}
        off += 3 * comps
        while s[off : off + 2] != b"\xff\xda":
            if n - off < 4:
                return None
            off += _U16BE(s, off + 2)[0] + 2
        if n - off < 5:
            return None
        off += 5 + s[off + 4] * 2
        if n - off < 2:
            return None
    return precision, rgb_ids, any(app.values())


def _j2k_params(s):
    """pydicom's get_j2k_parameters: SIZ of the codestream, after the JP2 boxes if any."""
    n = len(s)
    off = 0
    if s[0:8] == b"\x00\x00\x00\x0c\x6a\x50\x20\x20":
        off = 12
        while off < n:
            length = int.from_bytes(s[off : off + 4], "big")
            if s[off + 4 : off + 8] == b"jp2c":
                off += 8
                break
            if length == 0:  # pydicom would loop forever here
                return None
            off += length
    if n - off < 43 or s[off : off + 4] != b"\xff\x4f\xff\x51":
        return None
    ssiz = s[off + 42]
    return (ssiz & 0x7F) + 1, 1 if ssiz & 0x80 else 0


def jpeg_info(src):
    """``(precision, rgb_component_ids, jfif)`` of a JPEG / JPEG-LS codestream, read like pydicom.

    ``(-1, False, False)`` where pydicom's parser gives up (it then assumes Bits Stored).
    """
    return _jpeg_params(_byte_view(src)) or (-1, False, False)


def j2k_info(src):
    """``(precision, signed)`` of the first component of a JPEG 2000 codestream, or ``(-1, -1)``."""
    return _j2k_params(_byte_view(src)) or (-1, -1)


_CODECS = {}


def _codec(name):
    """The codec module, imported on first use so that the kernels load without it."""
    module = _CODECS.get(name)
    if module is None:
        try:
            module = __import__(name)
        except ImportError as exc:
            package = "pylibjpeg-libjpeg" if name == "_libjpeg" else "pylibjpeg-openjpeg"
            raise NotImplementedError(f"decoding this transfer syntax needs {package}") from exc
        _CODECS[name] = module
    return module


def _decode_libjpeg(src, index):
    status, data, _ = _codec("_libjpeg").decode(src, 0, False)
    code, _, message = status.decode("utf-8", "replace").partition("::::")
    if code != "0" or data is None:
        raise MalformedDatasetError(f"libjpeg cannot decode frame {index}: {message or code} ({code})")
    return data


def _decode_openjpeg(src, index):
    if src[:4] == b"\xff\x4f\xff\x51":
        fmt = 0
    elif src[:4] == b"\x0d\x0a\x87\x0a" or src[:12] == b"\x00\x00\x00\x0c\x6a\x50\x20\x20\x0d\x0a\x87\x0a":
        fmt = 2
    else:
        raise MalformedDatasetError(f"frame {index} is not a JPEG 2000 codestream")
    try:
        code, data = _codec("_openjpeg").decode(BytesIO(src), fmt, False)
    except RuntimeError as exc:  # the header did not parse
        raise MalformedDatasetError(f"openjpeg cannot decode frame {index}: {exc}") from None
    if code != 0:
        raise MalformedDatasetError(f"openjpeg cannot decode frame {index} (error {code})")
    return data


def _view_size(codec, precision, itemsize):
    # The container pydicom reads each decoded frame as: JPEG-LS and JPEG 2000 output is sized
    # by the codestream's precision, JPEG output by Bits Allocated.
    if codec == "jpegls":
        return 1 if 0 < precision <= 8 else 2 if 8 < precision <= 16 else itemsize
    if codec == "j2k":
        return 1 if 0 < precision <= 8 else 2 if 8 < precision <= 16 else 4 if 16 < precision <= 32 else itemsize
    return itemsize


def decode_frames(codec, buf, frames, out, frame_pixels, itemsize, signed, bits_stored, required):
    """Decode JPEG (``"jpeg"``), JPEG-LS (``"jpegls"``) or JPEG 2000 (``"j2k"``) frames into ``out``.

    ``frames`` are fragment spans into ``buf``; each decoded frame must hold ``frame_pixels``
    samples, read the way pydicom reads them (see _view_size) and cast to the ``itemsize``-byte
    integers of ``out`` (signed or not), frame after frame. Frames past ``required`` whose size
    does not fit are skipped, as pydicom does with excess frames. Returns ``(frames written,
    [(precision, signed, rgb_component_ids, jfif) per written frame])`` with precision and
    signedness as pydicom assumes them (Bits Stored, Pixel Representation when unknown).
    """
    if not isinstance(codec, str):
        raise TypeError(f"codec must be str, not {type(codec).__name__}")
    frame_pixels, itemsize, bits_stored, required = _ssize(frame_pixels), index(itemsize), index(bits_stored), _ssize(required)
    signed = bool(signed)
    view = _byte_view(buf)
    dst = _byte_view(out, writable=True)
    frame_bytes = frame_pixels * itemsize
    if codec not in ("jpeg", "jpegls", "j2k"):
        raise ValueError(f"unknown codec {codec!r}")
    if itemsize not in (1, 2, 4, 8):
        raise ValueError(f"itemsize must be 1, 2, 4 or 8, got {itemsize}")
    if len(dst) != frame_bytes * len(frames):
        raise ValueError(f"out has {len(dst)} bytes, {len(frames)} frames need {frame_bytes * len(frames)}")
    kind = "i" if signed else "u"
    target = np.frombuffer(dst, dtype=f"{kind}{itemsize}")
    written, infos = 0, []
    for i, src in enumerate(_frame_bytes(view, frames)):
        src = bytes(src)
        rgb_ids = jfif = False
        if codec == "j2k":
            precision, is_signed = _j2k_params(src) or (-1, -1)
            decoded = _decode_openjpeg(src, i)
        else:
            (precision, rgb_ids, jfif), is_signed = _jpeg_params(src) or (-1, False, False), -1
            decoded = _decode_libjpeg(src, i)
        if precision < 0:
            precision = bits_stored
        if is_signed < 0:
            is_signed = int(signed)
        size = _view_size(codec, precision, itemsize)
        if len(decoded) != frame_pixels * size:
            if i >= required:
                continue
            raise MalformedDatasetError(
                f"frame {i} decodes to {len(decoded)} bytes, expected {frame_pixels} samples "
                f"of {size} bytes"
            )
        target[written * frame_pixels : (written + 1) * frame_pixels] = np.frombuffer(decoded, f"{kind}{size}")
        infos.append((precision, is_signed, rgb_ids, jfif))
        written += 1
    return written, infos


# --------------------------------------------------------------------------------------------
# YBR_FULL to RGB


def ybr_to_rgb_exact(arr):
    """pydicom's YBR_FULL to RGB conversion (PS3.3 C.7.6.3.1.2), float32 operation for operation.

    ``arr`` is uint8 with samples on the last axis. The native kernel rounds every pixel in
    double precision and calls this for the rare ones that lie too close to a rounding boundary
    for the float32 result to be certain.
    """
    ybr_to_rgb = np.asarray(
        [
            [1.000, 1.000, 1.000],
            [0.000, -0.114 * 1.772 / 0.587, 1.772],
            [1.402, -0.299 * 1.402 / 0.587, 0.000],
        ],
        dtype=np.float32,
    )
    arr = arr.astype(np.float32)
    arr -= [0, 128, 128]
    np.matmul(arr, ybr_to_rgb, out=arr)
    arr += 0.5
    np.floor(arr, out=arr)
    np.clip(arr, 0, 255, out=arr)
    return arr.astype(np.uint8)


def ybr_to_rgb(src, dst):
    """YBR_FULL to RGB on 8-bit interleaved samples, identical to pydicom's conversion.

    ``src`` and ``dst`` are buffers of the same length (a multiple of 3); they may be the same
    object (converted in place).
    """
    s = _byte_view(src)
    d = _byte_view(dst, writable=True)
    if len(s) != len(d) or len(s) % 3:
        raise ValueError("src and dst must have the same length, a multiple of 3")
    np.frombuffer(d, np.uint8).reshape(-1, 3)[...] = ybr_to_rgb_exact(np.frombuffer(s, np.uint8).reshape(-1, 3))
