"""Flat datasets (no sequences) in Little Endian, read and written without pydicom.

Query identifiers and their responses are a handful of short elements; building a pydicom
Dataset for each costs more than the whole index lookup. Anything these functions do not
handle exactly (a sequence, an undefined length, a truncated element) makes the reader
return None, so that the caller takes the general path.
"""
from __future__ import annotations

import struct

# Explicit VR Little Endian: these VRs have a 2-byte reserved field and a 4-byte length.
_LONG_VRS = frozenset(("OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"))
_HEAD = struct.Struct("<HHI")
_SHORT_HEAD = struct.Struct("<HH2sH")
_LONG_HEAD = struct.Struct("<HH2s2xI")
_BINARY_FORMATS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d"}
UNDEFINED_LENGTH = 0xFFFFFFFF


def read_flat(data: bytes, implicit: bool) -> list[tuple[int, str | None, bytes]] | None:
    """The top-level elements as ``(tag, VR or None when implicit, value)``, or None when the
    dataset holds a sequence or an undefined length, or ends inside an element."""
    elements = []
    pos, end = 0, len(data)
    while pos < end:
        if end - pos < 8:
            return None
        if implicit:
            group, elem, length = _HEAD.unpack_from(data, pos)
            vr = None
            pos += 8
        else:
            vr = data[pos + 4 : pos + 6].decode("latin-1")
            if vr in _LONG_VRS:
                if end - pos < 12:
                    return None
                group, elem, _, length = _LONG_HEAD.unpack_from(data, pos)
                pos += 12
            else:
                group, elem, _, length = _SHORT_HEAD.unpack_from(data, pos)
                pos += 8
            if vr == "SQ":
                return None
        if length == UNDEFINED_LENGTH or pos + length > end:
            return None
        elements.append((group << 16 | elem, vr, data[pos : pos + length]))
        pos += length
    return elements


def element(tag: int, vr: str, value: bytes, implicit: bool) -> bytes:
    """One encoded element; ``value`` is already padded to an even length."""
    if implicit:
        return _HEAD.pack(tag >> 16, tag & 0xFFFF, len(value)) + value
    if vr in _LONG_VRS:
        return _LONG_HEAD.pack(tag >> 16, tag & 0xFFFF, vr.encode("ascii"), len(value)) + value
    return _SHORT_HEAD.pack(tag >> 16, tag & 0xFFFF, vr.encode("ascii"), len(value)) + value


def fits_short_form(vr: str, length: int) -> bool:
    return vr in _LONG_VRS or length <= 0xFFFE


def text_value(text: str, vr: str) -> bytes | None:
    """ASCII text padded as PS3.5 6.2 asks (UI with NUL, other text with a space), or None
    when the text is not ASCII (the caller then encodes it in a character set)."""
    if not text.isascii():
        return None
    raw = text.encode("ascii")
    if len(raw) % 2:
        raw += b"\x00" if vr == "UI" else b" "
    return raw


def binary_value(value: int | float | list, vr: str) -> bytes:
    values = value if isinstance(value, list) else [value]
    return struct.pack("<" + _BINARY_FORMATS[vr] * len(values), *values)


def is_binary(vr: str) -> bool:
    return vr in _BINARY_FORMATS
