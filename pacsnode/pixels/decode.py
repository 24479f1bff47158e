"""Pixel Data to numpy arrays, and datasets to Explicit VR Little Endian, over the native kernels.

Arrays follow pydicom 3's ``pixel_array`` exactly (values, dtype, shape, the YBR to RGB
conversion it applies by default), which is what the tests hold them to: (rows, columns) for
one frame, (frames, rows, columns[, samples]) for several, samples last. Frames are located,
decompressed and corrected in pacsnode._native.pixels; this module reads the Image Pixel
attributes, picks the kernel and applies pydicom's rules around it. pydicom itself is only used
by ``transcode_to_explicit_le`` to re-encode the non-pixel attributes (not a hot path).

Where pydicom cannot decode at all we do not try to reproduce its failure: a missing Planar
Configuration is taken as 0, and YBR data wider than 8 bits is returned as YBR rather than
rejected. Kernels assume a little-endian host.
"""
from __future__ import annotations

import struct
import sys
from dataclasses import dataclass, replace

import numpy as np

from pacsnode._native import header, pixels
from pacsnode.dicom.syntax import encoding_of, inflated
from pacsnode.dicom.uids import (
    DEFLATED_EXPLICIT_VR_LE,
    EXPLICIT_VR_BE,
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
)
from pacsnode.errors import MalformedDatasetError, MissingAttributeError

__all__ = [
    "PixelDescription", "decode_pixel_data", "decode_dataset", "pixel_array", "transcode_to_explicit_le",
]

if sys.byteorder != "little":  # pragma: no cover - the kernels write little-endian samples
    raise ImportError("pacsnode.pixels needs a little-endian host")

RLE_LOSSLESS = "1.2.840.10008.1.2.5"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
# Encapsulated syntaxes we decode, and the kernel codec for each.
CODECS = {
    RLE_LOSSLESS: "rle",
    JPEG_BASELINE: "jpeg",
    "1.2.840.10008.1.2.4.51": "jpeg",  # JPEG Extended (Process 2 & 4)
    "1.2.840.10008.1.2.4.57": "jpeg",  # JPEG Lossless, Non-Hierarchical (Process 14)
    "1.2.840.10008.1.2.4.70": "jpeg",  # JPEG Lossless, SV1
    "1.2.840.10008.1.2.4.80": "jpegls",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81": "jpegls",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90": "j2k",  # JPEG 2000 (Lossless Only)
    "1.2.840.10008.1.2.4.91": "j2k",  # JPEG 2000
    "1.2.840.10008.1.2.4.201": "j2k",  # HTJ2K (Lossless Only)
    "1.2.840.10008.1.2.4.202": "j2k",  # HTJ2K with RPCL (Lossless Only)
    "1.2.840.10008.1.2.4.203": "j2k",  # HTJ2K
}
NATIVE_SYNTAXES = (EXPLICIT_VR_LE, IMPLICIT_VR_LE, DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_BE)
# Lossy source syntaxes and the (0028,2114) Lossy Image Compression Method they imply.
LOSSY_METHODS = {
    JPEG_BASELINE: "ISO_10918_1",
    "1.2.840.10008.1.2.4.51": "ISO_10918_1",
    "1.2.840.10008.1.2.4.81": "ISO_14495_1",
    "1.2.840.10008.1.2.4.91": "ISO_15444_1",
    "1.2.840.10008.1.2.4.203": "ISO_15444_15",
}
# The values pydicom accepts (some retired).
PHOTOMETRICS = frozenset((
    "MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT",
    "YBR_RCT", "HSV", "ARGB", "CMYK", "YBR_PARTIAL_422", "YBR_PARTIAL_420",
))  # fmt: skip

# Image Pixel attributes (PS3.3 C.7.6.3) and the pixel data elements, ascending for the scanner.
SAMPLES, PHOTOMETRIC, PLANAR, FRAMES = 0x00280002, 0x00280004, 0x00280006, 0x00280008
ROWS, COLUMNS, ALLOCATED, STORED, REPRESENTATION = 0x00280010, 0x00280011, 0x00280100, 0x00280101, 0x00280103
EXT_OFFSETS, EXT_LENGTHS, FLOAT_PIXELS, DOUBLE_PIXELS, PIXEL_DATA = 0x7FE00001, 0x7FE00002, 0x7FE00008, 0x7FE00009, 0x7FE00010
_TAGS = (SAMPLES, PHOTOMETRIC, PLANAR, FRAMES, ROWS, COLUMNS, ALLOCATED, STORED, REPRESENTATION,
         EXT_OFFSETS, EXT_LENGTHS, FLOAT_PIXELS, DOUBLE_PIXELS, PIXEL_DATA)  # fmt: skip


@dataclass(frozen=True)
class PixelDescription:
    """The Image Pixel attributes that describe Pixel Data, without a pydicom Dataset."""

    rows: int
    columns: int
    samples_per_pixel: int = 1
    bits_allocated: int = 8
    bits_stored: int = 8
    pixel_representation: int = 0
    photometric_interpretation: str = "MONOCHROME2"
    planar_configuration: int = 0
    number_of_frames: int = 1

    def validate(self) -> None:
        """pydicom's checks on the values (ValueError), so that we decode what it would."""
        ba, bs = self.bits_allocated, self.bits_stored
        if not (1 <= ba <= 64 and (ba == 1 or ba % 8 == 0)):
            raise ValueError(f"Bits Allocated {ba} is not 1 or a multiple of 8 up to 64")
        if not 1 <= bs <= ba:
            raise ValueError(f"Bits Stored {bs} is not in 1..{ba} (Bits Allocated)")
        for name in ("rows", "columns"):
            if not 0 < getattr(self, name) <= 0xFFFF:
                raise ValueError(f"{name} {getattr(self, name)} is not in 1..65535")
        if self.number_of_frames < 1:
            raise ValueError(f"Number of Frames {self.number_of_frames} is less than 1")
        if self.samples_per_pixel not in (1, 3):
            raise ValueError(f"Samples per Pixel {self.samples_per_pixel} is not 1 or 3")
        if self.pixel_representation not in (0, 1):
            raise ValueError(f"Pixel Representation {self.pixel_representation} is not 0 or 1")
        if self.planar_configuration not in (0, 1):
            raise ValueError(f"Planar Configuration {self.planar_configuration} is not 0 or 1")
        if self.photometric_interpretation not in PHOTOMETRICS:
            raise ValueError(f"unknown Photometric Interpretation {self.photometric_interpretation!r}")

    @property
    def frame_pixels(self) -> int:
        """Samples in one frame."""
        return self.rows * self.columns * self.samples_per_pixel


# --------------------------------------------------------------------------------------------
# Reading the description from an encoded dataset


def _us(raw: bytes, little: bool) -> int | None:
    return struct.unpack_from("<H" if little else ">H", raw)[0] if len(raw) >= 2 else None


def _text(raw: bytes) -> str:
    return raw.decode("ascii", "replace").strip(" \0")


def describe(values: dict[int, bytes], little: bool) -> PixelDescription:
    """The description from raw (0028,xxxx) values as scanned; pydicom's defaults and checks."""
    def required(tag: int, name: str) -> int:
        value = _us(values.get(tag, b""), little)
        if value is None:
            raise MissingAttributeError(f"{name} ({tag >> 16:04X},{tag & 0xFFFF:04X}) is missing")
        return value

    photometric = _text(values.get(PHOTOMETRIC, b""))
    if not photometric:
        raise MissingAttributeError("Photometric Interpretation (0028,0004) is missing")
    frames = _text(values.get(FRAMES, b"")).split("\\")[0].strip()
    try:
        number_of_frames = int(frames) if frames else 1
    except ValueError:
        raise MalformedDatasetError(f"Number of Frames {frames!r} is not an integer") from None
    description = PixelDescription(
        rows=required(ROWS, "Rows"),
        columns=required(COLUMNS, "Columns"),
        samples_per_pixel=required(SAMPLES, "Samples per Pixel"),
        bits_allocated=required(ALLOCATED, "Bits Allocated"),
        bits_stored=required(STORED, "Bits Stored"),
        pixel_representation=required(REPRESENTATION, "Pixel Representation"),
        photometric_interpretation=photometric,
        planar_configuration=_us(values.get(PLANAR, b""), little) or 0,
        number_of_frames=number_of_frames or 1,  # pydicom reads 0 as 1
    )
    description.validate()
    return description


def decode_dataset(
    dataset: bytes | bytearray | memoryview, transfer_syntax: str, *, as_rgb: bool = True
) -> tuple[np.ndarray, PixelDescription]:
    """Decode the Pixel Data of an encoded dataset (without File Meta) in ``transfer_syntax``.

    Returns the array and the description of what it holds (Photometric Interpretation after
    any colour conversion, Planar Configuration 0, the frames actually found).
    """
    implicit, little = encoding_of(transfer_syntax)
    data = inflated(dataset, transfer_syntax)
    values = header.scan_dataset(data, _TAGS, implicit, little)
    if PIXEL_DATA not in values:
        if FLOAT_PIXELS in values or DOUBLE_PIXELS in values:
            raise NotImplementedError("Float and Double Float Pixel Data are not supported")
        raise MissingAttributeError("the dataset has no Pixel Data (7FE0,0010)")
    pixel_vr = None
    description = describe(values, little)
    if transfer_syntax == EXPLICIT_VR_BE and description.bits_allocated == 8:
        pixel_vr = _pixel_vr(data, values[PIXEL_DATA])
    return decode_pixel_data(
        values[PIXEL_DATA], transfer_syntax, description, ext_offsets=values.get(EXT_OFFSETS),
        ext_lengths=values.get(EXT_LENGTHS), as_rgb=as_rgb, pixel_vr=pixel_vr,
    )  # fmt: skip


def pixel_array(dataset: bytes | bytearray | memoryview, transfer_syntax: str) -> np.ndarray:
    """What pydicom's ``Dataset.pixel_array`` returns for this encoded dataset."""
    return decode_dataset(dataset, transfer_syntax)[0]


def _pixel_vr(data, value: bytes) -> str | None:
    """OB or OW: the VR of big endian 8-bit Pixel Data decides whether its bytes are swapped.

    The scanner returns values only, so find the element header right before the value.
    """
    for vr in (b"OW", b"OB"):
        head = b"\x7f\xe0\x00\x10" + vr + b"\0\0" + struct.pack(">I", len(value))
        pos = bytes(data).rfind(head)
        if pos >= 0 and data[pos + 12 : pos + 12 + len(value)] == value:
            return vr.decode()
    return None


# --------------------------------------------------------------------------------------------
# Decoding


def decode_pixel_data(
    pixel_data: bytes | bytearray | memoryview,
    transfer_syntax: str,
    description: PixelDescription,
    *,
    ext_offsets: bytes | None = None,
    ext_lengths: bytes | None = None,
    as_rgb: bool = True,
    pixel_vr: str | None = None,
) -> tuple[np.ndarray, PixelDescription]:
    """Decode a Pixel Data value (7FE0,0010) described by ``description``.

    ``ext_offsets`` / ``ext_lengths`` are the raw Extended Offset Table values, ``pixel_vr`` the
    VR of big endian native Pixel Data ("OW" swaps 8-bit samples pairwise, as pydicom does).
    Returns the array and the description of what it holds (see decode_dataset).
    """
    description.validate()
    codec = CODECS.get(transfer_syntax)
    if codec is not None:
        arr, description = _encapsulated(codec, pixel_data, transfer_syntax, description, ext_offsets, ext_lengths)
    elif transfer_syntax in NATIVE_SYNTAXES:
        arr, description = _native(pixel_data, transfer_syntax, description, pixel_vr)
    else:
        raise NotImplementedError(f"decoding transfer syntax {transfer_syntax} is not supported")
    if as_rgb and description.photometric_interpretation in ("YBR_FULL", "YBR_FULL_422"):
        arr, description = _to_rgb(arr, description)
    if description.samples_per_pixel > 1:
        description = replace(description, planar_configuration=0)
    return arr, description


def _reshape(flat: np.ndarray, d: PixelDescription, planar: int) -> np.ndarray:
    """pydicom's reshape: samples last; planar data as a transposed view, as pydicom returns it."""
    shape = (d.rows, d.columns)
    if d.number_of_frames > 1:
        shape = (d.number_of_frames, *shape)
    if d.samples_per_pixel == 1:
        return flat.reshape(shape)
    if planar == 0:
        return flat.reshape(*shape, d.samples_per_pixel)
    axes = (0, 2, 3, 1) if d.number_of_frames > 1 else (1, 2, 0)
    return flat.reshape(*shape[:-2], d.samples_per_pixel, *shape[-2:]).transpose(axes)


def _encapsulated(codec, data, syntax, d: PixelDescription, ext_offsets, ext_lengths):
    if d.bits_allocated == 1:
        raise NotImplementedError("encapsulated Pixel Data with 1 bit allocated is not supported")
    frames = pixels.frame_offsets(data, d.number_of_frames, ext_offsets, ext_lengths)
    if len(frames) < d.number_of_frames:
        raise MalformedDatasetError(
            f"the Pixel Data holds {len(frames)} frames, Number of Frames is {d.number_of_frames}"
        )
    itemsize = d.bits_allocated // 8
    signed = d.pixel_representation == 1
    dtype = np.dtype(f"<{'ui'[signed]}{itemsize}")
    # Frames past Number of Frames (found when fragments are split on EOI markers) are kept, as
    # pydicom keeps them, when they decode to a whole frame; they are decoded one by one so that
    # a stream of many tiny fragments cannot make us allocate for all of them up front.
    required, excess = frames[: d.number_of_frames], frames[d.number_of_frames :]
    flat = np.empty(len(required) * d.frame_pixels, dtype)
    extra = []
    planar = d.planar_configuration
    photometric = d.photometric_interpretation
    if codec == "rle":
        # The kernel also clears unused high bits (or extends the sign), as pydicom does here.
        args = (d.rows, d.columns, d.samples_per_pixel, d.bits_allocated, d.bits_stored, signed)
        pixels.rle_decode(data, required, flat, *args)
        for spans in excess:
            extra.append(np.empty(d.frame_pixels, dtype))
            pixels.rle_decode(data, [spans], extra[-1], *args)
        flat = np.concatenate([flat, *extra]) if extra else flat
        d = replace(d, number_of_frames=len(frames))
        return _reshape(flat, d, 1), d
    args = (d.frame_pixels, itemsize, signed, d.bits_stored)
    written, infos = pixels.decode_frames(codec, data, required, flat, *args, len(required))
    for spans in excess:
        one = np.empty(d.frame_pixels, dtype)
        fits, info = pixels.decode_frames(codec, data, [spans], one, *args, 0)
        if fits:
            extra.append(one)
            infos += info
    written += len(extra)
    flat = np.concatenate([flat, *extra]) if extra else flat
    precision, codestream_signed, _, _ = infos[-1]  # pydicom corrects with the last frame's values
    if codec == "j2k":
        if photometric in ("YBR_ICT", "YBR_RCT"):  # openjpeg applies the inverse transform
            photometric = "RGB"
        shift = 8 * itemsize - precision
        if photometric in ("MONOCHROME1", "MONOCHROME2") and shift > 0 and codestream_signed != signed:
            pixels.correct_bits(flat, itemsize, shift, signed)
    else:
        if d.samples_per_pixel == 3:
            photometric = _conform_colorspace(photometric, infos, syntax)
        if codec == "jpegls":
            planar = 0  # libjpeg returns JPEG-LS colour-by-pixel
            shift = 8 * itemsize - precision
            if signed and shift > 0:  # JPEG-LS cannot record signedness
                pixels.correct_bits(flat, itemsize, shift, signed)
        elif d.bits_stored < d.bits_allocated:
            pixels.correct_bits(flat, itemsize, d.bits_allocated - d.bits_stored, signed)
    d = replace(d, number_of_frames=written, photometric_interpretation=photometric)
    return _reshape(flat, d, planar), d


def _conform_colorspace(photometric: str, infos, syntax: str) -> str:
    """pydicom's _conform_jpg_colorspace, frame by frame: RGB component IDs or a JFIF marker win."""
    for _, _, rgb_ids, jfif in infos:
        if rgb_ids and photometric != "RGB":
            photometric = "RGB"
        elif jfif and "YBR" not in photometric:
            photometric = "YBR_FULL_422" if syntax == JPEG_BASELINE else "YBR_FULL"
    return photometric


def _to_rgb(arr: np.ndarray, d: PixelDescription) -> tuple[np.ndarray, PixelDescription]:
    """pydicom's default YBR_FULL(_422) to RGB conversion (8-bit, 3 samples only)."""
    if arr.dtype != np.uint8 or d.samples_per_pixel != 3:
        return arr, d
    arr = np.ascontiguousarray(arr)  # planar (transposed) RLE output becomes interleaved
    pixels.ybr_to_rgb(arr, arr)
    return arr, replace(d, photometric_interpretation="RGB")


def _native(data, syntax: str, d: PixelDescription, pixel_vr: str | None):
    """pydicom's _as_array_native: frames straight from the value, with its size rules."""
    frame_bits = d.rows * d.columns * d.samples_per_pixel * d.bits_allocated
    if d.photometric_interpretation == "YBR_FULL_422":
        frame_bytes = frame_bits // 8 // 3 * 2
    else:
        frame_bytes = frame_bits / 8 if d.bits_allocated == 1 else frame_bits // 8
    frames = d.number_of_frames
    expected = frame_bytes * frames
    needed = int(-(-expected // 1))  # ceil
    actual = len(data)
    if actual < needed + needed % 2 and actual != needed:
        raise MalformedDatasetError(
            f"the Pixel Data has {actual} bytes, {frames} frames of {d.rows}x{d.columns} need {needed}"
        )
    if actual > needed + needed % 2:
        if d.photometric_interpretation == "YBR_FULL_422" and actual >= needed // 2 * 3 + needed // 2 * 3 % 2:
            raise MalformedDatasetError("the Pixel Data is a third larger than YBR_FULL_422 allows")
        if d.photometric_interpretation != "YBR_FULL_422" and actual // frame_bytes > frames:
            frames = int(actual // frame_bytes)  # pydicom returns the excess frames
            d = replace(d, number_of_frames=frames)
            expected = frame_bytes * frames
            needed = int(-(-expected // 1))
    little = syntax != EXPLICIT_VR_BE
    kind = "u" if d.bits_allocated == 1 else "ui"[d.pixel_representation]
    dtype = np.dtype(f"{'<' if little else '>'}{kind}{max(d.bits_allocated // 8, 1)}")
    view = memoryview(data)[:needed]
    if not little and d.bits_allocated // 8 == 1 and pixel_vr == "OW":
        # 8-bit samples in big endian OW words: swap each pair back (the padding byte moves).
        swapped = np.frombuffer(memoryview(data)[: needed + needed % 2], "u2").byteswap()
        flat = swapped.view(dtype)[:needed].copy()
    elif d.bits_allocated == 1:
        pixels_total = d.rows * d.columns * d.samples_per_pixel * frames
        flat = np.unpackbits(np.frombuffer(view, np.uint8), bitorder="little", count=needed * 8)[:pixels_total]
    else:
        flat = np.frombuffer(view, dtype).copy()
    if d.photometric_interpretation == "YBR_FULL_422":
        # PS3.3 C.7.6.3.1.2: Y1 Y2 B R -> Y1 B R Y2 B R
        out = np.empty(flat.shape[0] // 2 * 3, dtype=dtype)
        out[::6], out[3::6] = flat[::4], flat[1::4]
        out[1::6], out[4::6] = flat[2::4], flat[2::4]
        out[2::6], out[5::6] = flat[3::4], flat[3::4]
        flat, d = out, replace(d, photometric_interpretation="YBR_FULL")
    arr = _reshape(flat, d, d.planar_configuration)
    if d.bits_allocated > d.bits_stored:
        shift = d.bits_allocated - d.bits_stored
        np.left_shift(arr, shift, out=arr)
        np.right_shift(arr, shift, out=arr)
    return arr, d


# --------------------------------------------------------------------------------------------
# Transcoding


def transcode_to_explicit_le(dataset: bytes | bytearray | memoryview, transfer_syntax: str) -> bytes:
    """Re-encode a dataset (without File Meta) as Explicit VR Little Endian with native Pixel Data.

    Every attribute but the pixel encoding is kept: encapsulated Pixel Data is decoded as
    pydicom's ``pixel_array`` decodes it (so YBR becomes RGB) and stored little endian, colour
    by pixel; Photometric Interpretation, Planar Configuration and Number of Frames follow the
    decoded array; the Extended Offset Table goes; a lossy source sets Lossy Image Compression
    to "01" (adding the Method when absent). Big endian native data is swapped to little endian.
    """
    from pydicom.dataelem import DataElement
    from pydicom.filebase import DicomBytesIO
    from pydicom.filereader import read_dataset
    from pydicom.filewriter import write_dataset

    implicit, little = encoding_of(transfer_syntax)
    data = inflated(dataset, transfer_syntax)
    ds = read_dataset(DicomBytesIO(bytes(data)), implicit, little)
    if transfer_syntax in CODECS and PIXEL_DATA in ds:
        arr, decoded = decode_dataset(data, transfer_syntax)
        value = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        vr = "OB" if decoded.bits_allocated <= 8 else "OW"
        ds[PIXEL_DATA] = DataElement(PIXEL_DATA, vr, value + b"\0" * (len(value) % 2))
        ds.PhotometricInterpretation = decoded.photometric_interpretation
        if decoded.samples_per_pixel > 1:
            ds.PlanarConfiguration = 0
        if "NumberOfFrames" in ds or decoded.number_of_frames > 1:
            ds.NumberOfFrames = decoded.number_of_frames
        for tag in (EXT_OFFSETS, EXT_LENGTHS):
            ds.pop(tag, None)
        if transfer_syntax in LOSSY_METHODS:
            ds.LossyImageCompression = "01"
            if "LossyImageCompressionMethod" not in ds:
                ds.LossyImageCompressionMethod = LOSSY_METHODS[transfer_syntax]
    elif transfer_syntax in CODECS or transfer_syntax not in NATIVE_SYNTAXES:
        raise NotImplementedError(f"transcoding from transfer syntax {transfer_syntax} is not supported")
    elif not little:
        _swap_to_little_endian(ds)
    fp = DicomBytesIO()
    fp.is_implicit_VR, fp.is_little_endian = False, True
    write_dataset(fp, ds)
    return fp.getvalue()


# Binary VRs whose raw values pydicom writes as read: their words must be swapped by hand.
_WORD_SIZES = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}


def _swap(value: bytes, size: int) -> bytes:
    whole = len(value) - len(value) % size
    swapped = np.frombuffer(value, f">u{size}", count=whole // size).astype(f"<u{size}").tobytes()
    return swapped + value[whole:]


def _swap_to_little_endian(ds) -> None:
    """Swap the words of binary values (nested ones too) read from a big endian dataset."""
    for elem in ds.iterall():
        if elem.VR in ("SQ", "UN") or not isinstance(elem.value, (bytes, bytearray)):
            continue
        if elem.tag == PIXEL_DATA:
            # As pydicom reads it: samples of Bits Allocated, 8-bit ones in OW words swapped too.
            allocated = ds.get("BitsAllocated", 16)
            size = 2 if allocated == 8 and elem.VR == "OW" else allocated // 8
            if size > 1:
                elem.value = _swap(elem.value, size)
        elif elem.VR in _WORD_SIZES:
            elem.value = _swap(elem.value, _WORD_SIZES[elem.VR])
