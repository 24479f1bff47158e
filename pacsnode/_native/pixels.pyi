"""Type stubs for pacsnode._native.pixels (and its twin pacsnode._native._ref.pixels)."""
from typing import Literal

# Any C-contiguous buffer is accepted; these are the types callers pass. Outputs must be writable.
_Buffer = bytes | bytearray | memoryview
_Writable = bytearray | memoryview  # or a C-contiguous numpy array
_Spans = list[list[tuple[int, int]]]

def frame_offsets(
    buf: _Buffer, n_frames: int | None, ext_offsets: _Buffer | None = None, ext_lengths: _Buffer | None = None
) -> _Spans:
    """``(start, length)`` spans of each frame's fragments in an encapsulated Pixel Data value."""

def get_frame(
    buf: _Buffer, index: int, n_frames: int | None, ext_offsets: _Buffer | None = None, ext_lengths: _Buffer | None = None
) -> bytes:
    """The encoded bytes of one frame, its fragments joined."""

def rle_decode(
    buf: _Buffer,
    frames: _Spans,
    out: _Writable,
    rows: int,
    columns: int,
    samples_per_pixel: int,
    bits_allocated: int,
    bits_stored: int,
    signed: bool,
) -> None:
    """RLE Lossless frames into ``out``: planar, little endian, unused bits corrected."""

def jpeg_info(src: _Buffer) -> tuple[int, bool, bool]:
    """``(precision, rgb_component_ids, jfif)`` as pydicom parses them; precision -1 if unknown."""

def j2k_info(src: _Buffer) -> tuple[int, int]:
    """``(precision, signed)`` of the first JPEG 2000 component, or ``(-1, -1)``."""

def decode_frames(
    codec: Literal["jpeg", "jpegls", "j2k"],
    buf: _Buffer,
    frames: _Spans,
    out: _Writable,
    frame_pixels: int,
    itemsize: int,
    signed: bool,
    bits_stored: int,
    required: int,
) -> tuple[int, list[tuple[int, int, bool, bool]]]:
    """JPEG-family / JPEG 2000 frames into ``out``; (frames written, per-frame codestream info)."""

def correct_bits(out: _Writable, itemsize: int, shift: int, signed: bool) -> None:
    """In place ``(x << shift) >> shift`` on native integers: pydicom's unused-bits correction."""

def ybr_to_rgb(src: _Buffer, dst: _Writable) -> None:
    """8-bit YBR_FULL to RGB, interleaved, identical to pydicom's conversion; may be in place."""
