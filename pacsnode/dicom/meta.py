"""Part 10 File Meta Information: written by us, read back by the native scanner."""
from __future__ import annotations

import struct

from pacsnode.dicom.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

PREAMBLE = b"\x00" * 128 + b"DICM"


def _element(tag: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        # UIDs pad with NUL, text with space (PS3.5 6.2).
        value += b"\x00" if vr == b"UI" else b" "
    if vr in (b"OB",):
        return struct.pack("<HH2sHI", tag >> 16, tag & 0xFFFF, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, len(value)) + value


def build_file_meta(
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax_uid: str,
    source_ae_title: str | None = None,
) -> bytes:
    """Return preamble, 'DICM' and group 0002 (Explicit VR Little Endian), ready to prepend."""
    body = b"".join(
        [
            _element(0x00020001, b"OB", b"\x00\x01"),
            _element(0x00020002, b"UI", sop_class_uid.encode("ascii")),
            _element(0x00020003, b"UI", sop_instance_uid.encode("ascii")),
            _element(0x00020010, b"UI", transfer_syntax_uid.encode("ascii")),
            _element(0x00020012, b"UI", IMPLEMENTATION_CLASS_UID.encode("ascii")),
            _element(0x00020013, b"SH", IMPLEMENTATION_VERSION_NAME.encode("ascii")),
        ]
        + ([_element(0x00020016, b"AE", source_ae_title.strip().encode("ascii"))] if source_ae_title else [])
    )
    group_length = struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(body))
    return PREAMBLE + group_length + body
