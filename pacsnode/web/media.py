"""Media types: parsing Accept and Content-Type, and the DICOM media types of PS3.18 8.7.

An Accept header becomes a list of ``MediaRange`` in the client's order of preference
(quality first, then header order); handlers walk it and take the first they can serve.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pacsnode.dicom.uids import DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_BE, EXPLICIT_VR_LE, IMPLICIT_VR_LE

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
OCTET_STREAM = "application/octet-stream"
MULTIPART_RELATED = "multipart/related"

NATIVE_SYNTAXES = frozenset((EXPLICIT_VR_LE, IMPLICIT_VR_LE, EXPLICIT_VR_BE, DEFLATED_EXPLICIT_VR_LE))

# Compressed transfer syntaxes and the media type of one encoded frame (PS3.18 Table 8.7.3-5).
FRAME_MEDIA_TYPES: dict[str, str] = {
    "1.2.840.10008.1.2.5": "image/dicom-rle",
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.4.100": "video/mpeg2",
    "1.2.840.10008.1.2.4.101": "video/mpeg2",
    "1.2.840.10008.1.2.4.102": "video/mp4",
    "1.2.840.10008.1.2.4.103": "video/mp4",
    "1.2.840.10008.1.2.4.104": "video/mp4",
    "1.2.840.10008.1.2.4.105": "video/mp4",
    "1.2.840.10008.1.2.4.106": "video/mp4",
    "1.2.840.10008.1.2.4.107": "video/H265",
    "1.2.840.10008.1.2.4.108": "video/H265",
}
# Older names clients still send.
_ALIASES = {"image/x-dicom-rle": "image/dicom-rle", "image/x-jls": "image/jls", "image/jll": "image/jpeg"}


def canonical(media_type: str) -> str:
    media_type = media_type.strip().lower()
    return _ALIASES.get(media_type, media_type)


@dataclass(frozen=True)
class MediaRange:
    type: str  # e.g. "multipart/related", "application/dicom+json", "*/*"
    params: dict = field(default_factory=dict)  # lower-case names, unquoted values
    q: float = 1.0

    @property
    def inner(self) -> str | None:
        """The ``type`` parameter of a multipart range (canonical), if any."""
        value = self.params.get("type")
        return canonical(value) if value else None

    @property
    def transfer_syntax(self) -> str | None:
        return self.params.get("transfer-syntax")

    def matches(self, media_type: str) -> bool:
        """Whether a concrete ``media_type`` is in this range (``*/*``, ``image/*``)."""
        if self.type == "*/*":
            return True
        if self.type.endswith("/*"):
            return media_type.split("/")[0] == self.type[:-2]
        return self.type == canonical(media_type)


def _split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes."""
    out, current, quoted = [], [], False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            out.append("".join(current))
            current = []
        else:
            current.append(ch)
    out.append("".join(current))
    return out


def parse_media_type(text: str) -> MediaRange:
    """One media type with its parameters (Content-Type, or one Accept element)."""
    head, *params = _split_top(text, ";")
    values: dict[str, str] = {}
    q = 1.0
    for param in params:
        name, _, value = param.partition("=")
        name = name.strip().lower()
        value = value.strip().strip('"').strip()
        if not name:
            continue
        if name == "q":
            try:
                q = float(value)
            except ValueError:
                q = 0.0
        else:
            values[name] = value
    return MediaRange(canonical(head) or "*/*", values, q)


def parse_accept(header: str | None) -> list[MediaRange]:
    """The Accept header's media ranges, most preferred first; no header is ``*/*``."""
    if not header or not header.strip():
        return [MediaRange("*/*")]
    ranges = [parse_media_type(part) for part in _split_top(header, ",") if part.strip()]
    # Stable: equal quality keeps the header's order.
    return sorted((r for r in ranges if r.q > 0), key=lambda r: -r.q)


def accepts_json(ranges: list[MediaRange]) -> bool:
    """Whether a DICOM JSON answer is acceptable (application/dicom+json or application/json)."""
    return any(r.matches(DICOM_JSON) or r.matches("application/json") for r in ranges)


def frame_media_type(transfer_syntax: str) -> str:
    """The media type of one frame stored in ``transfer_syntax``."""
    return FRAME_MEDIA_TYPES.get(transfer_syntax, OCTET_STREAM)
