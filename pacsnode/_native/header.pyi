"""Type stubs for pacsnode._native.header (and its twin pacsnode._native._ref.header)."""
from collections.abc import Sequence

# Any C-contiguous buffer is accepted; these are the types callers pass.
_Buffer = bytes | bytearray | memoryview

def scan_dataset(
    buf: _Buffer,
    tags: Sequence[int],
    implicit_vr: bool,
    little_endian: bool,
    offset: int = 0,
) -> dict[int, bytes]:
    """Raw value bytes of the wanted top-level ``tags`` (strictly ascending) present in ``buf``."""

def read_file_meta(buf: _Buffer) -> tuple[dict[int, bytes], int]:
    """Group 0002 raw values and the dataset offset, or ``({}, 0)`` without a "DICM" prefix."""
