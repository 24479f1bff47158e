"""Transfer syntax properties the node needs without building a pydicom Dataset."""
from __future__ import annotations

import zlib

from pacsnode.dicom.uids import DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_BE, IMPLICIT_VR_LE
from pacsnode.errors import MalformedDatasetError


def encoding_of(transfer_syntax: str) -> tuple[bool, bool]:
    """(implicit_vr, little_endian) of the dataset encoded in this syntax."""
    if transfer_syntax == IMPLICIT_VR_LE:
        return True, True
    return False, transfer_syntax != EXPLICIT_VR_BE


def inflated(dataset: bytes | memoryview, transfer_syntax: str) -> bytes | memoryview:
    """The plain dataset bytes: Deflated syntax is inflated (raw deflate, PS3.5 A.5)."""
    if transfer_syntax != DEFLATED_EXPLICIT_VR_LE:
        return dataset
    try:
        return zlib.decompressobj(-zlib.MAX_WBITS).decompress(dataset)
    except zlib.error as exc:
        raise MalformedDatasetError(f"deflated dataset does not inflate: {exc}") from exc
