"""Frames of a stored instance: the stored encoded bytes, or decoded by the native pixel path.

A thin adapter over ``pacsnode.pixels`` (which decodes a whole Pixel Data value): here one
frame is located in the value (``pixels.get_frame`` for encapsulated data, a slice for native
data) and only that frame is decoded, as a one-frame encapsulated value, so a request for frame
57 of a 300-frame instance decodes one frame, not 300.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, replace

import numpy as np

from pacsnode._native import header, pixels
from pacsnode.dicom.syntax import encoding_of, inflated
from pacsnode.dicom.uids import EXPLICIT_VR_BE, EXPLICIT_VR_LE
from pacsnode.errors import MalformedDatasetError
from pacsnode.pixels import decode as pixdecode
from pacsnode.pixels.decode import PixelDescription, decode_pixel_data, describe

DECODABLE = frozenset(pixdecode.CODECS) | frozenset(pixdecode.NATIVE_SYNTAXES)
_ITEM = 0xE000FFFE
_SEQ_END = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"


class NoPixelData(LookupError):
    pass


def split_part10(blob: bytes | memoryview) -> tuple[dict[int, bytes], memoryview]:
    """(File Meta raw values, the dataset after it) of a stored Part 10 blob."""
    meta, offset = header.read_file_meta(blob)
    return meta, memoryview(blob)[offset:]


@dataclass
class PixelSource:
    """The Pixel Data of one stored instance and what describes it."""

    transfer_syntax: str
    description: PixelDescription
    value: bytes  # the Pixel Data element's value as stored (little endian native, or encapsulated)
    ext_offsets: bytes | None = None
    ext_lengths: bytes | None = None
    pixel_vr: str | None = None

    @property
    def encapsulated(self) -> bool:
        return self.transfer_syntax not in pixdecode.NATIVE_SYNTAXES

    @property
    def number_of_frames(self) -> int:
        return self.description.number_of_frames

    # -- stored bytes ---------------------------------------------------------------------

    def encoded_frame(self, index: int) -> bytes:
        """Frame ``index`` (0-based) exactly as stored in its compressed syntax."""
        return pixels.get_frame(self.value, index, self.number_of_frames, self.ext_offsets, self.ext_lengths)

    def _native_slice(self, index: int) -> bytes | None:
        """A native frame's bytes straight from the value, where that is the answer."""
        d = self.description
        if (
            self.transfer_syntax == EXPLICIT_VR_BE
            or d.bits_allocated % 8
            or d.photometric_interpretation == "YBR_FULL_422"
        ):
            return None
        size = d.rows * d.columns * d.samples_per_pixel * (d.bits_allocated // 8)
        start = index * size
        if start + size > len(self.value):
            raise MalformedDatasetError(f"frame {index + 1} is beyond the Pixel Data")
        return self.value[start : start + size]

    # -- decoded --------------------------------------------------------------------------

    def frame_array(self, index: int, as_rgb: bool = True) -> tuple[np.ndarray, PixelDescription]:
        """Frame ``index`` decoded, as pydicom's ``pixel_array`` gives that frame."""
        d = replace(self.description, number_of_frames=1)
        if self.encapsulated:
            if self.transfer_syntax not in pixdecode.CODECS:
                raise NotImplementedError(f"decoding transfer syntax {self.transfer_syntax} is not supported")
            frame = self.encoded_frame(index)
            one = _encapsulate(frame)
            return decode_pixel_data(one, self.transfer_syntax, d, as_rgb=as_rgb)
        raw = self._native_slice(index)
        if raw is not None:
            syntax = EXPLICIT_VR_LE
            return decode_pixel_data(raw, syntax, d, as_rgb=as_rgb)
        arr, described = decode_pixel_data(
            self.value, self.transfer_syntax, self.description, as_rgb=as_rgb, pixel_vr=self.pixel_vr
        )
        if described.number_of_frames > 1:
            arr = arr[index]
        elif index:
            raise IndexError(index)
        return arr, replace(described, number_of_frames=1)

    def native_frame(self, index: int) -> bytes:
        """Frame ``index`` uncompressed, little endian, colour-by-pixel (PS3.18 octet-stream)."""
        if not self.encapsulated:
            raw = self._native_slice(index)
            if raw is not None:
                return bytes(raw)
        arr, d = self.frame_array(index)
        if d.bits_allocated == 1:
            return np.packbits(arr.astype(np.uint8).ravel(), bitorder="little").tobytes()
        return np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()


def _encapsulate(frame: bytes) -> bytes:
    """A one-frame encapsulated Pixel Data value: empty offset table, one fragment."""
    pad = b"\x00" if len(frame) % 2 else b""
    return b"".join(
        [struct.pack("<II", _ITEM, 0), struct.pack("<II", _ITEM, len(frame) + len(pad)), frame, pad, _SEQ_END]
    )


def pixel_source(dataset: bytes | memoryview, transfer_syntax: str) -> PixelSource:
    """Locate the Pixel Data and the Image Pixel attributes of an encoded dataset."""
    implicit, little = encoding_of(transfer_syntax)
    data = inflated(dataset, transfer_syntax)
    values = header.scan_dataset(data, pixdecode._TAGS, implicit, little)
    if pixdecode.PIXEL_DATA not in values:
        raise NoPixelData("the instance has no Pixel Data")
    description = describe(values, little)
    pixel_vr = None
    if transfer_syntax == EXPLICIT_VR_BE and description.bits_allocated == 8:
        pixel_vr = pixdecode._pixel_vr(data, values[pixdecode.PIXEL_DATA])
    value = values[pixdecode.PIXEL_DATA]
    if transfer_syntax in pixdecode.CODECS or transfer_syntax not in pixdecode.NATIVE_SYNTAXES:
        # Encapsulated: the frame count is what the offset tables / fragments hold.
        n = len(pixels.frame_offsets(value, description.number_of_frames, values.get(pixdecode.EXT_OFFSETS),
                                     values.get(pixdecode.EXT_LENGTHS)))  # fmt: skip
        if n < description.number_of_frames:
            description = replace(description, number_of_frames=n)
    return PixelSource(
        transfer_syntax, description, value, values.get(pixdecode.EXT_OFFSETS), values.get(pixdecode.EXT_LENGTHS),
        pixel_vr,
    )  # fmt: skip


# -- where frames are on disk, remembered per instance ----------------------------------------


@dataclass
class FrameMap:
    """Where each frame of a stored instance lies in its blob file: later requests read just
    the frame (one pread per fragment) instead of the whole instance."""

    path: str
    transfer_syntax: str
    description: PixelDescription
    spans: list[list[tuple[int, int]]]  # per frame: (absolute file offset, length) of its bytes
    encapsulated: bool

    @property
    def number_of_frames(self) -> int:
        return len(self.spans)

    def read(self, index: int) -> bytes:
        import os

        fd = os.open(self.path, os.O_RDONLY)
        try:
            chunks = [os.pread(fd, length, offset) for offset, length in self.spans[index]]
        finally:
            os.close(fd)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def native_frame(self, index: int) -> bytes:
        """Uncompressed little endian (decoded by the pixel path if stored compressed)."""
        data = self.read(index)
        if not self.encapsulated:
            return data
        source = PixelSource(self.transfer_syntax, replace(self.description, number_of_frames=1), _encapsulate(data))
        return source.native_frame(0)


def frame_map(blob: bytes, source: PixelSource, path: str, base: int) -> FrameMap | None:
    """The FrameMap of an instance whose Part 10 ``blob`` starts at ``base`` in ``path``, when
    its frames can be read in place (not deflated, not big endian, whole-byte samples)."""
    d = source.description
    if source.transfer_syntax in (EXPLICIT_VR_BE, pixdecode.DEFLATED_EXPLICIT_VR_LE):
        return None
    value = source.value
    # Pixel Data is the last element but for padding: find its value's offset from the end.
    start = blob.rfind(value[: min(len(value), 64)], max(0, len(blob) - len(value) - 4096))
    if start < 0 or blob[start : start + len(value)] != value:
        return None
    if source.encapsulated:
        frames = pixels.frame_offsets(value, d.number_of_frames, source.ext_offsets, source.ext_lengths)[: d.number_of_frames]
        spans = [[(base + start + s, n) for s, n in frame] for frame in frames]
        return FrameMap(path, source.transfer_syntax, d, spans, True)
    if d.bits_allocated % 8 or d.photometric_interpretation == "YBR_FULL_422":
        return None
    size = d.rows * d.columns * d.samples_per_pixel * (d.bits_allocated // 8)
    count = min(d.number_of_frames, len(value) // size)
    spans = [[(base + start + i * size, size)] for i in range(count)]
    return FrameMap(path, source.transfer_syntax, d, spans, False)

