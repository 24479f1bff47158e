"""DIMSE command sets (PS3.7 9.3, E): decoded with the native scanner, encoded by hand.

Command sets are always Implicit VR Little Endian and carry group 0000 only.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from pacsnode._native import header

C_STORE_RQ = 0x0001
C_GET_RQ = 0x0010
C_FIND_RQ = 0x0020
C_MOVE_RQ = 0x0021
C_ECHO_RQ = 0x0030
C_CANCEL_RQ = 0x0FFF
NO_DATASET = 0x0101

_AFFECTED_SOP_CLASS = 0x00000002
_COMMAND_FIELD = 0x00000100
_MESSAGE_ID = 0x00000110
_RESPONDING_TO = 0x00000120
_MOVE_DESTINATION = 0x00000600
_PRIORITY = 0x00000700
_DATASET_TYPE = 0x00000800
_STATUS = 0x00000900
_AFFECTED_SOP_INSTANCE = 0x00001000
_MOVE_ORIGINATOR_AET = 0x00001030
_MOVE_ORIGINATOR_ID = 0x00001031
_TAGS = (
    _AFFECTED_SOP_CLASS,
    _COMMAND_FIELD,
    _MESSAGE_ID,
    _RESPONDING_TO,
    _MOVE_DESTINATION,
    _PRIORITY,
    _DATASET_TYPE,
    _STATUS,
    _AFFECTED_SOP_INSTANCE,
    _MOVE_ORIGINATOR_AET,
    _MOVE_ORIGINATOR_ID,
)


@dataclass(frozen=True)
class Command:
    field: int
    message_id: int
    has_dataset: bool
    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    responding_to: int | None = None  # responses and C-CANCEL-RQ: the request's Message ID
    move_destination: str = ""
    status: int | None = None  # responses only


def _us(raw: bytes | None) -> int | None:
    return struct.unpack("<H", raw[:2])[0] if raw and len(raw) >= 2 else None


def _ui(raw: bytes | None) -> str:
    return raw.rstrip(b"\x00 ").decode("ascii", "replace") if raw else ""


def decode_command(buf: bytes) -> Command:
    """Raises MalformedDatasetError for a malformed command set, ValueError when a
    mandatory field is missing."""
    raw = header.scan_dataset(buf, _TAGS, True, True)
    field, message_id, dataset_type = _us(raw.get(_COMMAND_FIELD)), _us(raw.get(_MESSAGE_ID)), _us(raw.get(_DATASET_TYPE))
    responding_to = _us(raw.get(_RESPONDING_TO))
    if field is None or dataset_type is None:
        raise ValueError("command set lacks Command Field or Command Data Set Type")
    if field == C_CANCEL_RQ or field & 0x8000:
        if responding_to is None:
            raise ValueError("command set lacks Message ID Being Responded To")
        message_id = 0  # a response or C-CANCEL-RQ names the request it answers, has no ID of its own
    elif message_id is None:
        raise ValueError("command set lacks Message ID")
    return Command(
        field=field,
        message_id=message_id,
        has_dataset=dataset_type != NO_DATASET,
        sop_class_uid=_ui(raw.get(_AFFECTED_SOP_CLASS)),
        sop_instance_uid=_ui(raw.get(_AFFECTED_SOP_INSTANCE)),
        responding_to=responding_to,
        move_destination=raw.get(_MOVE_DESTINATION, b"").strip(b" \x00").decode("ascii", "replace"),
        status=_us(raw.get(_STATUS)),
    )


def _element(tag: int, value: bytes) -> bytes:
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value


def _uid(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def _text(value: str) -> bytes:
    raw = value.encode("ascii", "replace")
    return raw + b" " if len(raw) % 2 else raw


def encode_store_request(
    message_id: int, sop_class_uid: str, sop_instance_uid: str, originator_aet: str | None = None, originator_id: int | None = None
) -> bytes:
    """A C-STORE-RQ command set (a dataset follows), for retrieve sub-operations."""
    elements = [
        _element(_AFFECTED_SOP_CLASS, _uid(sop_class_uid)),
        _element(_COMMAND_FIELD, struct.pack("<H", C_STORE_RQ)),
        _element(_MESSAGE_ID, struct.pack("<H", message_id)),
        _element(_PRIORITY, struct.pack("<H", 0x0002)),  # low, as PS3.7 suggests for sub-operations
        _element(_DATASET_TYPE, struct.pack("<H", 0x0000)),
        _element(_AFFECTED_SOP_INSTANCE, _uid(sop_instance_uid)),
    ]
    if originator_aet:
        elements.append(_element(_MOVE_ORIGINATOR_AET, _text(originator_aet)))
        elements.append(_element(_MOVE_ORIGINATOR_ID, struct.pack("<H", originator_id or 0)))
    body = b"".join(elements)
    return _element(0x00000000, struct.pack("<I", len(body))) + body


def encode_response(
    command_field: int,
    message_id: int,
    status: int,
    sop_class_uid: str,
    sop_instance_uid: str | None = None,
    error_comment: str | None = None,
    has_dataset: bool = False,
    suboperations: tuple[int | None, int, int, int] | None = None,
) -> bytes:
    """A response command set: C-ECHO-RSP, C-STORE-RSP, C-FIND-RSP (with an identifier),
    C-MOVE-RSP and C-GET-RSP (``suboperations``: remaining, completed, failed, warning)."""
    elements = [
        _element(_AFFECTED_SOP_CLASS, _uid(sop_class_uid)),
        _element(_COMMAND_FIELD, struct.pack("<H", command_field | 0x8000)),
        _element(_RESPONDING_TO, struct.pack("<H", message_id)),
        _element(_DATASET_TYPE, struct.pack("<H", 0x0000 if has_dataset else NO_DATASET)),
        _element(_STATUS, struct.pack("<H", status)),
    ]
    if error_comment:
        elements.append(_element(0x00000902, _text(error_comment[:64])))  # ErrorComment
    if sop_instance_uid:
        elements.append(_element(_AFFECTED_SOP_INSTANCE, _uid(sop_instance_uid)))
    if suboperations is not None:
        # Number of Remaining (absent in a final response), Completed, Failed, Warning.
        for tag, count in zip((0x00001020, 0x00001021, 0x00001022, 0x00001023), suboperations):
            if count is not None:
                elements.append(_element(tag, struct.pack("<H", count)))
    body = b"".join(elements)
    return _element(0x00000000, struct.pack("<I", len(body))) + body
