"""PDU framing (PS3.8 9.3): bytes in, PDUs and PDVs out; no sockets."""
from __future__ import annotations

import struct
from typing import Iterator

A_ASSOCIATE_RQ = 0x01
A_ASSOCIATE_AC = 0x02
A_ASSOCIATE_RJ = 0x03
P_DATA_TF = 0x04
A_RELEASE_RQ = 0x05
A_RELEASE_RP = 0x06
A_ABORT = 0x07

PDU_HEADER = struct.Struct(">BxI")
_PDV_HEADER = struct.Struct(">IBB")

# A-ABORT sources and reasons (PS3.8 9.3.8).
SOURCE_USER = 0x00
SOURCE_PROVIDER = 0x02
REASON_NOT_SPECIFIED = 0x00
REASON_UNRECOGNIZED_PDU = 0x01
REASON_UNEXPECTED_PDU = 0x02
REASON_INVALID_PARAMETER = 0x06

RELEASE_RP = bytes([A_RELEASE_RP, 0, 0, 0, 0, 4, 0, 0, 0, 0])


class ProtocolError(Exception):
    """The peer broke the upper layer protocol; answered with an A-ABORT."""

    def __init__(self, message: str, reason: int = REASON_INVALID_PARAMETER) -> None:
        super().__init__(message)
        self.reason = reason


def abort_pdu(source: int, reason: int) -> bytes:
    return bytes([A_ABORT, 0, 0, 0, 0, 4, 0, 0, source, reason])


def iter_pdvs(body: memoryview) -> Iterator[tuple[int, bool, bool, memoryview]]:
    """(context id, is_command, is_last, fragment) for each PDV item of a P-DATA-TF body."""
    pos, end = 0, len(body)
    while pos < end:
        if end - pos < 6:
            raise ProtocolError("truncated PDV item header")
        length, context_id, control = _PDV_HEADER.unpack_from(body, pos)
        if length < 2 or pos + 4 + length > end:
            raise ProtocolError(f"PDV item length {length} does not fit its P-DATA-TF PDU")
        yield context_id, bool(control & 0x01), bool(control & 0x02), body[pos + 6 : pos + 4 + length]
        pos += 4 + length


def p_data(context_id: int, is_command: bool, payload: bytes, max_pdu: int) -> list[bytes]:
    """Fragment a command or dataset into P-DATA-TF PDUs of at most ``max_pdu`` bytes
    (0: unlimited), one PDV each; the last fragment carries the 'last' bit."""
    parts = p_data_parts(context_id, is_command, payload, max_pdu)
    return [parts[i] + parts[i + 1] for i in range(0, len(parts), 2)]


def p_data_message(context_id: int, command: bytes, dataset: bytes | None, max_pdu: int) -> list[bytes]:
    """A whole DIMSE message: command and dataset as two PDVs of one P-DATA-TF PDU when it
    fits ``max_pdu``, so that the requester reads one PDU per response (PS3.8 9.3.5)."""
    if dataset is None:
        return p_data(context_id, True, command, max_pdu)
    length = len(command) + len(dataset) + 12
    if max_pdu and length > max_pdu:
        return p_data(context_id, True, command, max_pdu) + p_data(context_id, False, dataset, max_pdu)
    return [
        PDU_HEADER.pack(P_DATA_TF, length)
        + _PDV_HEADER.pack(len(command) + 2, context_id, 0x03)
        + command
        + _PDV_HEADER.pack(len(dataset) + 2, context_id, 0x02)
        + dataset
    ]


def p_data_parts(
    context_id: int, is_command: bool, payload, max_pdu: int, last: bool = True
) -> list[bytes | memoryview]:
    """The PDUs of ``p_data`` as (headers, fragment) pieces, fragments as views of ``payload``:
    for a writev-style send (transport.writelines) of a dataset without copying it.
    ``last=False``: more of the message follows (no fragment carries the 'last' bit)."""
    room = (max_pdu - 6) if max_pdu else max(len(payload), 1)
    room = max(room, 1)
    parts: list[bytes | memoryview] = []
    view = memoryview(payload)
    offset = 0
    while True:
        fragment = view[offset : offset + room]
        offset += len(fragment)
        done = offset >= len(payload)
        control = (0x01 if is_command else 0x00) | (0x02 if done and last else 0x00)
        pdv_length = len(fragment) + 2
        parts += (PDU_HEADER.pack(P_DATA_TF, pdv_length + 4) + _PDV_HEADER.pack(pdv_length, context_id, control), fragment)
        if done:
            return parts
