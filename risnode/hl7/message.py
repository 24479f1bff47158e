"""Parse an inbound HL7 v2 message: MSH-18 decoding, python-hl7's tree, plain accessors.

python-hl7 splits the message into segments, fields, repetitions, components and
subcomponents and unescapes values (\\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\Xhh\\). We add: reading the
header from raw bytes before decoding (MSH-18 says how to decode the rest, and a broken
message still needs its control ID for the AR), header validation with ERR locations, and
accessors that return "" for anything absent instead of raising.
"""
from __future__ import annotations

from dataclasses import dataclass

import hl7

from risnode.errors import (
    DATA_TYPE_ERROR,
    REQUIRED_FIELD_MISSING,
    SEGMENT_SEQUENCE_ERROR,
    TABLE_VALUE_NOT_FOUND,
    UNSUPPORTED_PROCESSING_ID,
    UNSUPPORTED_VERSION_ID,
    Hl7Error,
)
from risnode.hl7 import charsets

PROCESSING_IDS = ("P", "T", "D")


@dataclass(frozen=True)
class Header:
    """MSH as read from the raw bytes, best effort (every field may be empty)."""

    sending_app: str = ""
    sending_facility: str = ""
    receiving_app: str = ""
    receiving_facility: str = ""
    message_type: str = ""
    event: str = ""
    control_id: str = ""
    processing_id: str = "P"
    version: str = "2.5.1"
    charset: str = ""  # MSH-18 as sent

    @property
    def control_key(self) -> str:
        """The control ID is unique per sender (MSH-3/MSH-4), so it is keyed with them."""
        return f"{self.sending_app}|{self.sending_facility}|{self.control_id}"


def normalize(raw: bytes) -> bytes:
    """Segments end with CR; accept LF and CRLF from senders that use them."""
    return raw.strip(b"\r\n\t\x00 ").replace(b"\r\n", b"\r").replace(b"\n", b"\r")


def read_header(raw: bytes) -> Header:
    """The MSH fields of ``raw`` without validating anything; never raises."""
    raw = normalize(raw)
    if not raw.startswith(b"MSH") or len(raw) < 8:
        return Header()
    first = raw.split(b"\r", 1)[0].decode("ascii", "replace")
    sep, comp = first[3], first[4]
    fields = first.split(sep)

    def field(n: int, component: int = 1) -> str:
        index = n - 1  # fields[1] is MSH-2 (MSH-1 is the separator itself)
        value = fields[index] if index < len(fields) else ""
        parts = value.split("~")[0].split(comp)
        return parts[component - 1].strip() if component <= len(parts) else ""

    return Header(
        sending_app=field(3), sending_facility=field(4), receiving_app=field(5), receiving_facility=field(6),
        message_type=field(9, 1).upper(), event=field(9, 2).upper(), control_id=field(10),
        processing_id=field(11) or "P", version=field(12) or "2.5.1", charset=field(18),
    )


class Segment:
    """One segment; ``get`` counts like the standard (PID-3 is ``get(3)``), absent is ""."""

    def __init__(self, message: hl7.Message, node: hl7.Segment, occurrence: int) -> None:
        self._message = message
        self._node = node
        self.name = str(node[0][0])
        self.occurrence = occurrence

    def _reps(self, field: int) -> list:
        if field >= len(self._node) or field < 1:
            return []
        node = self._node[field]
        return [r for r in node] if isinstance(node, hl7.Field) else [node]

    def repetitions(self, field: int) -> int:
        return sum(1 for r in self._reps(field) if str(r))

    def get(self, field: int, component: int = 1, rep: int = 1, sub: int = 1) -> str:
        reps = self._reps(field)
        if rep > len(reps):
            return ""
        node = reps[rep - 1]
        path = (component, sub)
        for depth, index in enumerate(path):
            if isinstance(node, str):
                return self._unescape(node) if all(i == 1 for i in path[depth:]) else ""
            if index > len(node):
                return ""
            node = node[index - 1]
        return self._unescape(str(node))

    def components(self, field: int, rep: int = 1) -> list[str]:
        """The components of one repetition (first subcomponents), unescaped."""
        reps = self._reps(field)
        if rep > len(reps):
            return []
        node = reps[rep - 1]
        if isinstance(node, str):
            return [self._unescape(node)]
        return [self.get(field, c + 1, rep) for c in range(len(node))]

    def _unescape(self, value: str) -> str:
        return self._message.unescape(value).strip() if "\\" in value else value.strip()

    def require(self, field: int, what: str, component: int = 1) -> str:
        value = self.get(field, component)
        if not value:
            where = f"{self.name}-{field}" + (f".{component}" if component > 1 else "")
            raise Hl7Error.missing(where, what)
        return value


@dataclass
class Hl7Message:
    header: Header
    raw: bytes
    text: str
    segments: list[Segment]
    codec: str

    def first(self, name: str) -> Segment | None:
        return next((s for s in self.segments if s.name == name), None)

    def all(self, name: str) -> list[Segment]:
        return [s for s in self.segments if s.name == name]

    @property
    def kind(self) -> str:
        return f"{self.header.message_type}^{self.header.event}"


def parse(raw: bytes) -> Hl7Message:
    """Decode and parse; raises Hl7Error (AR) for anything that cannot be taken as HL7 v2."""
    raw = normalize(raw)
    if not raw.startswith(b"MSH") or len(raw) < 8:
        raise Hl7Error.reject("message does not start with an MSH segment", "MSH-1", SEGMENT_SEQUENCE_ERROR)
    sep = raw[3:4]
    encoding = raw[4:8]
    if sep.isalnum() or len(set(encoding + sep)) != 5 or sep in b"\r\n":
        raise Hl7Error.reject("MSH-1/MSH-2: bad field separator or encoding characters", "MSH-2", DATA_TYPE_ERROR)
    header = read_header(raw)
    charset = header.charset or charsets.guess(raw)
    codec = charsets.codec(charset)
    if codec is None:
        raise Hl7Error.reject(
            f"MSH-18 {charset!r} not supported; use one of {', '.join(charsets.supported())}", "MSH-18", TABLE_VALUE_NOT_FOUND
        )
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError as exc:
        raise Hl7Error.reject(f"message is not valid {charset} (byte {exc.start})", "MSH-18", DATA_TYPE_ERROR) from None
    for location, value, what in (("MSH-9", header.message_type, "message type"), ("MSH-9.2", header.event, "trigger event"), ("MSH-10", header.control_id, "message control ID")):
        if not value:
            raise Hl7Error(f"{location} ({what}) is required", location, REQUIRED_FIELD_MISSING, ack_code="AR")
    if header.processing_id[:1] not in PROCESSING_IDS:
        raise Hl7Error.reject(f"MSH-11 {header.processing_id!r}: use P, T or D", "MSH-11", UNSUPPORTED_PROCESSING_ID)
    if not header.version.startswith("2."):
        raise Hl7Error.reject(f"MSH-12 {header.version!r}: HL7 version 2.x only", "MSH-12", UNSUPPORTED_VERSION_ID)
    try:
        tree = hl7.parse(text)
    except Exception as exc:  # python-hl7 raises assorted errors on broken structure
        raise Hl7Error.reject(f"cannot parse the message: {exc}", "MSH", DATA_TYPE_ERROR) from None
    counts: dict[str, int] = {}
    segments = []
    for node in tree:
        name = str(node[0][0]) if len(node) and len(node[0]) else ""
        if len(name) != 3 or not name.isalnum():
            raise Hl7Error.reject(f"segment {len(segments) + 1}: bad segment name {name[:8]!r}", name[:3], SEGMENT_SEQUENCE_ERROR)
        counts[name] = counts.get(name, 0) + 1
        segments.append(Segment(tree, node, counts[name]))
    return Hl7Message(header, raw, text, segments, codec)


def read_ack(raw: bytes) -> tuple[str, str, str]:
    """(MSA-1, MSA-2, MSA-3 or ERR-8) of an acknowledgment; leniently, since peers' ACKs
    often omit what an inbound message must have (MSH-9.2, MSH-12)."""
    raw = normalize(raw)
    if not raw.startswith(b"MSH") or len(raw) < 8:
        return "", "", "not an HL7 message"
    text = raw.decode("utf-8", "replace")
    sep, comp = text[3], text[4]
    segments = {line[:3]: line.split(sep) for line in reversed(text.split("\r")) if len(line) > 3}
    msa = segments.get("MSA", [])
    err = segments.get("ERR", [])

    def field(fields: list[str], n: int) -> str:
        return fields[n].split(comp)[0].strip() if n < len(fields) else ""

    return field(msa, 1), field(msa, 2), (msa[3] if len(msa) > 3 else "") or (err[8] if len(err) > 8 else "")
