"""pacsnode._native.pixels (Cython), its twin pacsnode._native._ref.pixels, and pacsnode.pixels.

The reference is pydicom 3's own decoding (``pixel_array`` with the pylibjpeg plugins installed):
* every compressed corpus file pydicom decodes gives an identical array (values, dtype, shape),
  through both twins; the few it cannot decode are listed and counted;
* the same on files DCMTK's encoders (dcmcrle, dcmcjpeg, dcmcjpls) make during the run;
* frame extraction agrees with pydicom's generate_fragmented_frames on every encapsulated file;
* truncated and flipped streams give the same result or the same exception class from both
  twins, only clear exceptions, and no crash (a batch runs in a subprocess);
* hand-built streams for what the corpus covers thinly (offset tables, RLE quirks).
"""
from __future__ import annotations

import functools
import importlib
import os
import random
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.encaps import (
    encapsulate,
    encapsulate_extended,
    generate_fragmented_frames,
    generate_frames,
)
from pydicom.pixels.decoders.rle import _rle_decode_frame
from pydicom.pixels.utils import _get_jpg_parameters, get_j2k_parameters

import pacsnode._native as native_pkg
from pacsnode._native import header
from pacsnode._native._ref import pixels as ref_pixels
from pacsnode.dicom.syntax import encoding_of
from pacsnode.errors import MalformedDatasetError
from pacsnode.pixels import PixelDescription, decode, decode_dataset, decode_pixel_data
from tests.corpus import corpus_files
from tests.peers import IN_CI, dcmtk, require


def _import_native():
    chosen = native_pkg.pixels
    try:
        return importlib.import_module("pacsnode._native.pixels")
    except ImportError:
        return None
    finally:
        # Importing the submodule by name rebinds the package attribute; keep the selection.
        native_pkg.pixels = chosen


native_pixels = _import_native()
ROOT = Path(__file__).resolve().parents[2]
CORPUS = corpus_files()
RLE = "1.2.840.10008.1.2.5"


def _need_native():
    require(native_pixels is not None, "pacsnode._native.pixels not built (python setup.py build_ext --inplace)")
    return native_pixels


@pytest.fixture(params=["native", "ref"])
def twin(request, monkeypatch):
    """The kernel module under test, also installed under pacsnode.pixels for the decode layer."""
    module = _need_native() if request.param == "native" else ref_pixels
    monkeypatch.setattr(decode, "pixels", module)
    return module


def _outcome(fn, *args, **kwargs):
    """The result, or the exception class for bad input; any other exception propagates."""
    try:
        return fn(*args, **kwargs)
    except (MalformedDatasetError, ValueError, NotImplementedError, IndexError) as exc:
        return type(exc)


def _same_array(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, got.shape, want.dtype, want.shape)
    assert np.array_equal(got, want)


def _name(path):
    return os.path.basename(str(path))


# --------------------------------------------------------------------------------------------
# Files and pydicom's view of them


@functools.cache
def split(path):
    """(dataset bytes without File Meta, transfer syntax) of a Part 10 file, or None."""
    raw = Path(path).read_bytes()
    try:
        meta, offset = header.read_file_meta(raw)
    except MalformedDatasetError:
        return None
    if 0x00020010 not in meta:
        return None
    return raw[offset:], meta[0x00020010].rstrip(b"\0 ").decode()


@functools.cache
def reference(path):
    """(pydicom dataset, its pixel_array or the exception it raised)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = dcmread(path, force=True)
        try:
            return ds, ds.pixel_array
        except Exception as exc:  # pydicom's ways to fail vary (RuntimeError, ValueError...)
            return ds, exc


def _read_with(ds):
    """The encoding pydicom really read the dataset with (it sniffs: a syntax may lie)."""
    return next(((e.is_implicit_VR, e.is_little_endian) for e in map(ds.get_item, ds.keys())
                 if isinstance(e, RawDataElement)), ds.original_encoding)  # fmt: skip


def description_of(ds) -> PixelDescription:
    return PixelDescription(
        rows=ds.Rows, columns=ds.Columns, samples_per_pixel=ds.SamplesPerPixel,
        bits_allocated=ds.BitsAllocated, bits_stored=ds.BitsStored,
        pixel_representation=ds.PixelRepresentation,
        photometric_interpretation=ds.PhotometricInterpretation,
        planar_configuration=ds.get("PlanarConfiguration", 0) or 0,
        number_of_frames=int(ds.get("NumberOfFrames", 1) or 1),
    )  # fmt: skip


def _syntax(path):
    found = split(path)
    return found[1] if found else None


def _frames(ds):
    return int(ds.get("NumberOfFrames", 1) or 1)


ENCAPSULATED = [p for p in CORPUS if _syntax(p) in decode.CODECS]
NATIVE = [p for p in CORPUS if _syntax(p) in decode.NATIVE_SYNTAXES]


def corpus_path(name):
    return next(p for p in CORPUS if _name(p) == name)


# --------------------------------------------------------------------------------------------
# 1. the corpus against pydicom


def _check_against_pydicom(path):
    ds, want = reference(path)
    dataset, syntax = split(path)
    got, described = decode_pixel_data(
        ds.PixelData, syntax, description_of(ds),
        ext_offsets=ds.get("ExtendedOffsetTable"), ext_lengths=ds.get("ExtendedOffsetTableLengths"),
        pixel_vr=ds["PixelData"].VR,
    )  # fmt: skip
    _same_array(got, want)
    # The encoded dataset gives the same, unless its syntax lies about the encoding (then the
    # caller is expected to know better: the scanner reads what the syntax says).
    if _read_with(ds) == encoding_of(syntax):
        again, described_again = decode_dataset(dataset, syntax)
        _same_array(again, want)
        assert described_again == described
    return described


def test_corpus_covers_the_compressed_syntaxes():
    syntaxes = {_syntax(p) for p in ENCAPSULATED}
    assert len(ENCAPSULATED) >= 55
    assert {RLE, "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.70",
            "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.90",
            "1.2.840.10008.1.2.4.91"} <= syntaxes  # fmt: skip


def test_pydicom_cannot_decode_only_a_few():
    without_pixels, undecodable = [], []
    for path in ENCAPSULATED:
        ds, result = reference(path)
        if "PixelData" not in ds:
            without_pixels.append(_name(path))
        elif isinstance(result, Exception):
            undecodable.append(_name(path))
    assert len(without_pixels) <= 3, without_pixels
    assert len(undecodable) <= 3, undecodable
    # Both are broken streams; we refuse them with a clear error too.
    for name in undecodable:
        dataset, syntax = split(corpus_path(name))
        with pytest.raises(MalformedDatasetError):
            decode_dataset(dataset, syntax)


@pytest.mark.parametrize("path", ENCAPSULATED, ids=_name)
def test_corpus_matches_pydicom(twin, path):
    ds, want = reference(path)
    if "PixelData" not in ds or isinstance(want, Exception):
        pytest.skip("pydicom cannot decode it (counted in test_pydicom_cannot_decode_only_a_few)")
    _check_against_pydicom(path)


@pytest.mark.parametrize("path", NATIVE, ids=_name)
def test_native_syntaxes_match_pydicom(path):
    ds, want = reference(path)
    if "PixelData" not in ds or isinstance(want, Exception):
        pytest.skip("no pixel data pydicom can decode")
    _check_against_pydicom(path)


# --------------------------------------------------------------------------------------------
# 2. files DCMTK encodes during the run

# name: (program, options, corpus input, expected transfer syntax)
DCMTK_CASES = {
    "rle-8bit-palette": ("dcmcrle", [], "OBXXXX1A.dcm", RLE),
    "rle-16bit-signed": ("dcmcrle", [], "CT_small.dcm", RLE),
    "rle-12bit-signed": ("dcmcrle", [], "mlut_18.dcm", RLE),
    "rle-12bit-multiframe": ("dcmcrle", [], "emri_small.dcm", RLE),
    "rle-multiframe-no-offset-table": ("dcmcrle", ["-ot"], "emri_small.dcm", RLE),
    "rle-fragmented": ("dcmcrle", ["+fs", "1"], "emri_small.dcm", RLE),
    "rle-rgb": ("dcmcrle", [], "SC_rgb.dcm", RLE),
    "rle-rgb-multiframe": ("dcmcrle", [], "SC_rgb_2frame.dcm", RLE),
    "rle-rgb-16bit-multiframe": ("dcmcrle", [], "SC_rgb_16bit_2frame.dcm", RLE),
    "rle-rgb-from-planar": ("dcmcrle", [], "color-pl.dcm", RLE),
    "rle-ybr-full": ("dcmcrle", [], "SC_ybr_full_uncompressed.dcm", RLE),
    "rle-32bit-multiframe": ("dcmcrle", [], "rtdose.dcm", RLE),
    "rle-rgb-large": ("dcmcrle", [], "US1_UNCR.dcm", RLE),
    "jpeg-extended-12bit": ("dcmcjpeg", ["+ee"], "emri_small.dcm", "1.2.840.10008.1.2.4.51"),
    "jpeg-extended-signed": ("dcmcjpeg", ["+ee"], "mlut_18.dcm", "1.2.840.10008.1.2.4.51"),
    "jpeg-extended-rgb": ("dcmcjpeg", ["+ee"], "SC_rgb.dcm", "1.2.840.10008.1.2.4.51"),
    "jpeg-lossless-p14": ("dcmcjpeg", ["+el"], "CT_small.dcm", "1.2.840.10008.1.2.4.57"),
    "jpeg-lossless-p14-sv3": ("dcmcjpeg", ["+el", "+sv", "3"], "MR_small.dcm", "1.2.840.10008.1.2.4.57"),
    "jpeg-lossless-p14-multiframe": ("dcmcjpeg", ["+el"], "emri_small.dcm", "1.2.840.10008.1.2.4.57"),
    "jpeg-lossless-p14-rgb": ("dcmcjpeg", ["+el"], "SC_rgb_2frame.dcm", "1.2.840.10008.1.2.4.57"),
    "jpeg-lossless-sv1": ("dcmcjpeg", ["+e1"], "CT_small.dcm", "1.2.840.10008.1.2.4.70"),
    "jpeg-lossless-sv1-12bit-signed": ("dcmcjpeg", ["+e1"], "mlut_18.dcm", "1.2.840.10008.1.2.4.70"),
    "jpeg-lossless-sv1-no-offset-table": ("dcmcjpeg", ["+e1", "-ot"], "emri_small.dcm", "1.2.840.10008.1.2.4.70"),
    "jpeg-lossless-sv1-default-8bit": ("dcmcjpeg", [], "OBXXXX1A.dcm", "1.2.840.10008.1.2.4.70"),
    "jpeg-lossless-sv1-rgb-16bit": ("dcmcjpeg", ["+e1"], "SC_rgb_16bit_2frame.dcm", "1.2.840.10008.1.2.4.70"),
    "jpeg-baseline-mono": ("dcmcjpeg", ["+eb"], "vlut_04.dcm", "1.2.840.10008.1.2.4.50"),
    "jpeg-baseline-ybr422": ("dcmcjpeg", ["+eb"], "SC_rgb.dcm", "1.2.840.10008.1.2.4.50"),
    "jpeg-baseline-ybr422-multiframe": ("dcmcjpeg", ["+eb"], "SC_rgb_2frame.dcm", "1.2.840.10008.1.2.4.50"),
    "jpeg-baseline-ybr444": ("dcmcjpeg", ["+eb", "+s4"], "US1_UNCR.dcm", "1.2.840.10008.1.2.4.50"),
    "jpeg-baseline-rgb": ("dcmcjpeg", ["+eb", "+cr"], "US1_UNCR.dcm", "1.2.840.10008.1.2.4.50"),
    "jpeg-baseline-fragmented": ("dcmcjpeg", ["+eb", "+fs", "1"], "SC_rgb_2frame.dcm", "1.2.840.10008.1.2.4.50"),
    "jpeg-baseline-fragmented-no-offset-table": ("dcmcjpeg", ["+eb", "+fs", "1", "-ot"], "SC_rgb_2frame.dcm",
                                                 "1.2.840.10008.1.2.4.50"),
    "jpegls-lossless-16bit-signed": ("dcmcjpls", [], "CT_small.dcm", "1.2.840.10008.1.2.4.80"),
    "jpegls-lossless-12bit-signed": ("dcmcjpls", [], "mlut_18.dcm", "1.2.840.10008.1.2.4.80"),
    "jpegls-lossless-multiframe": ("dcmcjpls", [], "emri_small.dcm", "1.2.840.10008.1.2.4.80"),
    "jpegls-lossless-8bit": ("dcmcjpls", [], "OBXXXX1A.dcm", "1.2.840.10008.1.2.4.80"),
    "jpegls-lossless-rgb-line": ("dcmcjpls", ["+il"], "SC_rgb_2frame.dcm", "1.2.840.10008.1.2.4.80"),
    "jpegls-lossless-rgb-sample": ("dcmcjpls", ["+is"], "SC_rgb.dcm", "1.2.840.10008.1.2.4.80"),
    "jpegls-lossless-rgb-none": ("dcmcjpls", ["+in"], "color-pl.dcm", "1.2.840.10008.1.2.4.80"),
    "jpegls-lossless-fragmented-no-offset-table": ("dcmcjpls", ["+fs", "1", "-ot"], "emri_small.dcm",
                                                   "1.2.840.10008.1.2.4.80"),
    "jpegls-near-lossless-12bit": ("dcmcjpls", ["+en"], "emri_small.dcm", "1.2.840.10008.1.2.4.81"),
    "jpegls-near-lossless-rgb-16bit": ("dcmcjpls", ["+en", "+md", "5"], "SC_rgb_16bit_2frame.dcm",
                                       "1.2.840.10008.1.2.4.81"),
    "jpegls-near-lossless-rgb": ("dcmcjpls", ["+en"], "US1_UNCR.dcm", "1.2.840.10008.1.2.4.81"),
    "jpegls-near-lossless-ybr": ("dcmcjpls", ["+en", "+is"], "SC_ybr_full_uncompressed.dcm", "1.2.840.10008.1.2.4.81"),
}


@pytest.fixture(scope="session")
def dcmtk_file(tmp_path_factory):
    """``make(case)``: the file DCMTK encodes for a DCMTK_CASES entry (once per session)."""
    folder = tmp_path_factory.mktemp("dcmtk")
    made = {}

    def make(case):
        if case not in made:
            program, options, source, syntax = DCMTK_CASES[case]
            out = folder / f"{case}.dcm"
            run = subprocess.run([dcmtk(program), *options, corpus_path(source), str(out)],
                                 capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
            assert run.returncode == 0, run.stderr
            assert _syntax(out) == syntax
            made[case] = str(out)
        return made[case]

    return make


@pytest.mark.parametrize("case", sorted(DCMTK_CASES))
def test_dcmtk_encoded_matches_pydicom(twin, dcmtk_file, case):
    path = dcmtk_file(case)
    _, want = reference(path)
    assert not isinstance(want, Exception), want
    _check_against_pydicom(path)
    _check_frames(twin, path)


@pytest.mark.parametrize("case", ["jpegls-lossless-fragmented-no-offset-table", "jpeg-lossless-sv1-no-offset-table"])
def test_excess_frames_like_pydicom(twin, dcmtk_file, case):
    """Fragments split on EOI markers into more frames than Number of Frames: pydicom keeps them."""
    from dataclasses import replace

    from pydicom.pixels import get_decoder

    path = dcmtk_file(case)
    ds, _ = reference(path)
    syntax = _syntax(path)
    claimed = replace(description_of(ds), number_of_frames=_frames(ds) - 1)
    got, described = decode_pixel_data(ds.PixelData, syntax, claimed)
    options = {k: getattr(claimed, k) for k in ("rows", "columns", "samples_per_pixel", "bits_allocated",
                                                "bits_stored", "pixel_representation", "photometric_interpretation",
                                                "planar_configuration", "number_of_frames")}  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want, properties = get_decoder(syntax).as_array(ds.PixelData, **options)
    _same_array(got, want)
    assert described.number_of_frames == properties["number_of_frames"] == _frames(ds)
    assert described.photometric_interpretation == properties["photometric_interpretation"]


def test_dcmtk_cases_cover_what_they_claim(dcmtk_file):
    """The layouts the kernels must handle really are in the generated files."""
    shapes = {}
    for case in DCMTK_CASES:
        ds = dcmread(dcmtk_file(case))
        fragments = [len(f) for f in generate_fragmented_frames(ds.PixelData, number_of_frames=_frames(ds))]
        bot_length = struct.unpack("<I", ds.PixelData[4:8])[0]
        shapes[case] = (ds.BitsAllocated, ds.SamplesPerPixel, _frames(ds), max(fragments), bot_length)
    assert shapes["rle-32bit-multiframe"][:3] == (32, 1, 15)
    assert shapes["rle-rgb-16bit-multiframe"][:3] == (16, 3, 2)
    assert shapes["rle-fragmented"][3] > 1 and shapes["rle-multiframe-no-offset-table"][4] == 0
    assert shapes["jpeg-baseline-fragmented-no-offset-table"][3:] == (2, 0)  # split on EOI markers
    assert shapes["jpegls-lossless-fragmented-no-offset-table"][3] > 1


# --------------------------------------------------------------------------------------------
# 3. frame extraction against pydicom


def _check_frames(kernels, path):
    ds, _ = reference(path)
    value, count = ds.PixelData, _frames(ds)
    want = list(generate_fragmented_frames(value, number_of_frames=count))
    spans = kernels.frame_offsets(value, count)
    assert [tuple(value[s : s + n] for s, n in frame) for frame in spans] == want
    joined = list(generate_frames(value, number_of_frames=count))
    assert [kernels.get_frame(memoryview(value), i, count) for i in range(len(spans))] == joined
    with pytest.raises(IndexError):
        kernels.get_frame(value, len(spans), count)


@pytest.mark.parametrize("path", ENCAPSULATED, ids=_name)
def test_frames_match_pydicom(twin, path):
    if "PixelData" not in reference(path)[0]:
        pytest.skip("no Pixel Data")
    _check_frames(twin, path)


def _item(value):
    return b"\xfe\xff\x00\xe0" + struct.pack("<I", len(value)) + value


JPEG_FRAMES = [b"\xff\xd8" + bytes([i]) * (10 + 6 * i) + b"\xff\xd9" for i in range(4)]


def test_offset_tables(twin):
    # Basic Offset Table, 3 fragments per frame
    value = encapsulate(JPEG_FRAMES, fragments_per_frame=3, has_bot=True)
    spans = twin.frame_offsets(value, 4)
    assert [len(f) for f in spans] == [3, 3, 3, 3]
    assert [twin.get_frame(value, i, 4) for i in range(4)] == JPEG_FRAMES
    # Extended Offset Table (7FE0,0001/0002), raw 8-byte little endian values
    value, offsets, lengths = encapsulate_extended(JPEG_FRAMES)
    assert twin.frame_offsets(value, 4, offsets, lengths) == twin.frame_offsets(value, 4)
    assert [twin.get_frame(value, i, None, offsets, lengths) for i in range(4)] == JPEG_FRAMES
    # ...preferred over the Basic one (here listing the frames backwards), ignored when the two
    # tables disagree in count, as pydicom does
    bot = encapsulate(JPEG_FRAMES, has_bot=True)
    backwards = (struct.pack("<4Q", *struct.unpack("<4Q", offsets)[::-1]),
                 struct.pack("<4Q", *struct.unpack("<4Q", lengths)[::-1]))  # fmt: skip
    assert [twin.get_frame(bot, i, 4, *backwards) for i in range(4)] == JPEG_FRAMES[::-1]
    assert twin.frame_offsets(bot, 4, offsets[:8], lengths) == twin.frame_offsets(bot, 4)
    # No table: one fragment per frame; several per frame split on EOI; one frame of several
    plain = encapsulate(JPEG_FRAMES, fragments_per_frame=1, has_bot=False)
    assert [twin.get_frame(plain, i, 4) for i in range(4)] == JPEG_FRAMES
    split3 = encapsulate(JPEG_FRAMES, fragments_per_frame=3, has_bot=False)
    assert [twin.get_frame(split3, i, 4) for i in range(4)] == JPEG_FRAMES
    assert [twin.get_frame(split3, i, 2) for i in range(4)] == JPEG_FRAMES  # more frames than said
    assert twin.get_frame(split3, 0, 1) == b"".join(JPEG_FRAMES)
    assert twin.get_frame(split3, 0, 1) == next(generate_frames(split3, number_of_frames=1))
    # A trailing sequence delimiter item ends the walk.
    assert twin.frame_offsets(plain + b"\xfe\xff\xdd\xe0\0\0\0\0", 4) == twin.frame_offsets(plain, 4)


def _malformed_items():
    bot = _item(b"")
    frag = _item(b"\xff\xd8abcd\xff\xd9")
    return {
        "empty": (b"", 4, "Basic Offset Table"),
        "no-bot-item": (b"\x10\x00\x10\x00" + b"\0" * 8, 4, "Basic Offset Table"),
        "bot-not-multiple-of-4": (_item(b"\0" * 6) + frag, 1, "multiple of 4"),
        "bot-past-end": (b"\xfe\xff\x00\xe0\x40\0\0\0" + b"\0" * 8, 1, "runs past"),
        "truncated-item-header": (bot + frag + frag[:5], 2, r"offset 24\b"),
        "not-an-item": (bot + frag + b"\x08\x00\x10\x00\0\0\0\0", 2, r"offset 24\b"),
        "undefined-length": (bot + b"\xfe\xff\x00\xe0\xff\xff\xff\xff" + frag, 1, r"offset 8\b"),
        "fragment-past-end": (bot + frag[:-1], 1, r"offset 8\b"),
        "no-fragments": (bot, 1, "no fragments"),
        "fewer-fragments-than-frames": (bot + frag + frag, 3, "cannot hold"),
        "ext-offset-past-end": (bot + frag, 1, "Extended Offset Table"),
        "ext-length-past-end": (bot + frag, 1, "Extended Offset Table length"),
    }


@pytest.mark.parametrize("case", sorted(_malformed_items()))
def test_malformed_items_raise(twin, case):
    value, frames, message = _malformed_items()[case]
    ext = {}
    if case == "ext-offset-past-end":
        ext = {"ext_offsets": struct.pack("<Q", 99), "ext_lengths": struct.pack("<Q", 8)}
    elif case == "ext-length-past-end":
        ext = {"ext_offsets": struct.pack("<Q", 0), "ext_lengths": struct.pack("<Q", 99)}
    with pytest.raises(MalformedDatasetError, match=message):
        twin.frame_offsets(value, frames, **ext)


def test_frame_arguments(twin):
    plain = encapsulate(JPEG_FRAMES, has_bot=False)
    with pytest.raises(ValueError, match="number of frames"):
        twin.frame_offsets(plain, None)
    with pytest.raises(ValueError):
        twin.frame_offsets(plain, -1)
    with pytest.raises(TypeError):
        twin.frame_offsets(plain, "4")
    with pytest.raises(TypeError):
        twin.frame_offsets("text", 4)
    with pytest.raises(BufferError):
        twin.frame_offsets(memoryview(plain + plain)[::2], 4)
    assert twin.frame_offsets(bytearray(plain), 4) == twin.frame_offsets(memoryview(plain), 4)
    with pytest.raises(IndexError):
        twin.get_frame(plain, -1, 4)


# --------------------------------------------------------------------------------------------
# 4. RLE, hand-built


def _packbits(data: bytes) -> bytes:
    """A plain PackBits encoder: replicate runs of 3+, literal runs otherwise."""
    out, i = bytearray(), 0
    while i < len(data):
        run = 1
        while i + run < len(data) and run < 128 and data[i + run] == data[i]:
            run += 1
        if run >= 3:
            out += bytes((257 - run, data[i]))
            i += run
            continue
        j = i
        while j < len(data) and j - i < 128 and not (j + 2 < len(data) and data[j] == data[j + 1] == data[j + 2]):
            j += 1
        out += bytes((j - i - 1,)) + data[i:j]
        i = j
    return bytes(out)


def _rle_frame(segments: list[bytes]) -> bytes:
    offsets, pos = [], 64
    for seg in segments:
        offsets.append(pos)
        pos += len(seg)
    return struct.pack("<16I", len(segments), *offsets, *[0] * (15 - len(segments))) + b"".join(segments)


def _rle_encode(arr: np.ndarray) -> bytes:
    """One frame (rows, cols[, samples]) into RLE segments, most significant byte first."""
    arr = arr.reshape(*arr.shape[:2], -1)
    size = arr.dtype.itemsize
    segments = []
    for s in range(arr.shape[2]):
        plane = arr[:, :, s].astype(arr.dtype.newbyteorder("<")).tobytes()
        for byte in reversed(range(size)):
            seg = _packbits(plane[byte::size])
            segments.append(seg + b"\0" * (len(seg) % 2))
    return _rle_frame(segments)


def _decode_rle(kernels, frame: bytes, rows, cols, samples, bits, stored=None, signed=False, frames=1):
    out = np.empty(rows * cols * samples * frames, dtype=f"<{'ui'[signed]}{bits // 8}")
    value = _item(b"") + b"".join(_item(frame) for _ in range(frames))
    kernels.rle_decode(value, kernels.frame_offsets(value, frames), out, rows, cols, samples, bits,
                       stored or bits, signed)  # fmt: skip
    return out


@pytest.mark.parametrize("bits", [8, 16, 32, 64])
@pytest.mark.parametrize("samples", [1, 3])
def test_rle_round_trip(twin, bits, samples):
    if samples * bits // 8 > 15:
        pytest.skip("more than 15 segments cannot be RLE encoded")
    rng = np.random.default_rng(bits * samples)
    rows, cols = 7, 33  # odd sizes: odd segments, padded
    arr = rng.integers(0, 1 << min(bits, 62), size=(rows, cols, samples), dtype=f"u{bits // 8}")
    arr[2:5] = arr[2, 0]  # runs
    frame = _rle_encode(arr)
    out = _decode_rle(twin, frame, rows, cols, samples, bits, frames=3)
    planes = out.reshape(3, samples, rows, cols).transpose(0, 2, 3, 1)
    assert all(np.array_equal(planes[i], arr) for i in range(3))
    # pydicom's reference decoder gives the same planar little endian bytes.
    assert out[: rows * cols * samples].tobytes() == bytes(_rle_decode_frame(frame, rows, cols, samples, bits))


def test_rle_unused_bits_and_sign(twin):
    arr = np.array([[0x0FFF, 0xF800, 0x0800, 0x1234]], dtype="<u2")
    frame = _rle_encode(arr)
    assert _decode_rle(twin, frame, 1, 4, 1, 16, stored=12).tolist() == [0x0FFF, 0x0800, 0x0800, 0x0234]
    assert _decode_rle(twin, frame, 1, 4, 1, 16, stored=12, signed=True).tolist() == [-1, -2048, -2048, 0x234]


def test_rle_tolerated_like_pydicom(twin):
    plane = b"abc" + b"z" * 7
    literal, replicate = _packbits(b"abc"), _packbits(b"z" * 7)
    cases = {
        "padding after the plane": literal + replicate + _packbits(b"xyz"),
        "a run past the plane": literal + _packbits(b"z" * 9),
        "no-op headers": b"\x80" + literal + b"\x80" + replicate,
        "odd trailing byte": literal + replicate + b"\x00",
    }
    for why, segment in cases.items():
        frame = _rle_frame([segment])
        out = _decode_rle(twin, frame, 2, 5, 1, 8)
        assert out.tobytes() == plane, why
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns about the padding
            assert out.tobytes() == bytes(_rle_decode_frame(frame, 2, 5, 1, 8)), why


def _rle_errors():
    plane = _packbits(bytes(range(10)))
    return {
        "short-header": (b"\x01\0\0\0" + b"\0" * 20, "less than its 64-byte header"),
        "segment-count": (_rle_frame([plane, plane]), "2 segments, expected 1"),
        "short-segment": (_rle_frame([plane[:-3]]), "segment 0 decodes to 7 bytes, expected 10"),
        "replicate-without-value": (_rle_frame([b"\x04" + bytes(range(5)) + b"\xfd"]), "decodes to 5"),
        "offset-past-end": (_rle_frame([plane])[:4] + struct.pack("<I", 999) + _rle_frame([plane])[8:], "decodes to 0"),
    }


@pytest.mark.parametrize("case", sorted(_rle_errors()))
def test_rle_malformed_raise(twin, case):
    frame, message = _rle_errors()[case]
    with pytest.raises(MalformedDatasetError, match=message):
        _decode_rle(twin, frame, 2, 5, 1, 8)


def test_rle_arguments(twin):
    frame = _rle_encode(np.zeros((2, 5), np.uint8))
    value = _item(b"") + _item(frame)
    spans = twin.frame_offsets(value, 1)
    out = np.empty(10, np.uint8)
    for args, error in [((2, 5, 1, 12, 12, False), NotImplementedError), ((2, 5, 1, 8, 9, False), ValueError),
                        ((0, 5, 1, 8, 8, False), ValueError), ((2, 5, 3, 64, 64, False), ValueError),
                        ((2, 6, 1, 8, 8, False), ValueError)]:  # fmt: skip
        with pytest.raises(error):
            twin.rle_decode(value, spans, out, *args)
    with pytest.raises(ValueError, match="outside the buffer"):
        twin.rle_decode(value, [[(0, len(value) + 1)]], out, 2, 5, 1, 8, 8, False)
    with pytest.raises(BufferError):
        twin.rle_decode(value, spans, bytes(10), 2, 5, 1, 8, 8, False)


# --------------------------------------------------------------------------------------------
# 5. small kernels


def test_ybr_to_rgb_is_pydicom_for_every_colour(twin):
    from pydicom.pixels.processing import convert_color_space

    y, cb, cr = np.meshgrid(*[np.arange(256, dtype=np.uint8)] * 3, indexing="ij")
    every = np.ascontiguousarray(np.stack([y, cb, cr], -1))  # (256, 256, 256, 3)
    want = convert_color_space(every, "YBR_FULL", "RGB")
    out = np.empty_like(every)
    twin.ybr_to_rgb(every, out)
    assert np.array_equal(out, want)
    twin.ybr_to_rgb(every, every)  # in place
    assert np.array_equal(every, want)
    with pytest.raises(ValueError):
        twin.ybr_to_rgb(bytes(6), bytearray(3))


@pytest.mark.parametrize("itemsize", [1, 2, 4, 8])
@pytest.mark.parametrize("signed", [False, True])
def test_correct_bits_is_numpy_shifting(twin, itemsize, signed):
    rng = np.random.default_rng(itemsize)
    dtype = np.dtype(f"{'ui'[signed]}{itemsize}")
    values = rng.integers(np.iinfo(dtype).min, np.iinfo(dtype).max, size=1000, dtype=dtype, endpoint=True)
    for shift in range(0, 8 * itemsize + 2, max(1, itemsize)):
        got = values.copy()
        twin.correct_bits(got, itemsize, shift, signed)
        want = values.copy()
        if 0 < shift < 8 * itemsize:
            np.left_shift(want, shift, out=want)
            np.right_shift(want, shift, out=want)
        elif shift >= 8 * itemsize:
            want[:] = 0
        assert np.array_equal(got, want), shift


def _codestreams():
    """First frames of every JPEG-family / JPEG 2000 corpus file."""
    streams = []
    for path in ENCAPSULATED:
        ds, _ = reference(path)
        if "PixelData" in ds and _syntax(path) != RLE:
            streams.append((_syntax(path), next(generate_frames(ds.PixelData, number_of_frames=_frames(ds)))))
    return streams


def test_codestream_parameters_are_pydicoms(twin):
    jp2 = b"\x00\x00\x00\x0c\x6a\x50\x20\x20"
    assert any(stream.startswith(jp2) for _, stream in _codestreams())  # a JP2 header, non-conformant
    for syntax, stream in _codestreams():
        # pydicom loops forever on a JP2 header cut short (a box length reads as 0): not those.
        cuts = [] if stream.startswith(jp2) else range(0, min(len(stream), 400), 7)
        for cut in [len(stream), *cuts]:
            src = stream[:cut]
            if decode.CODECS[syntax] == "j2k":
                info = get_j2k_parameters(src)
                want = (info["precision"], int(info["is_signed"])) if "precision" in info else (-1, -1)
                assert twin.j2k_info(src) == want, (syntax, cut)
            else:
                info = _get_jpg_parameters(src)
                ids = info.get("component_ids")
                jfif = any(v.startswith(b"JFIF") for v in info.get("app", {}).values())
                want = (info["precision"], ids in ([82, 71, 66], [114, 103, 98]), jfif) if info else (-1, False, False)
                assert twin.jpeg_info(src) == want, (syntax, cut)


def test_j2k_info_survives_cut_jp2_headers(twin):
    jp2 = next(stream for _, stream in _codestreams() if stream.startswith(b"\x00\x00\x00\x0c\x6a\x50"))
    assert twin.j2k_info(jp2)[0] > 0
    for cut in range(200):
        assert twin.j2k_info(jp2[:cut]) == (-1, -1)


def test_decode_frames_arguments(twin):
    value = encapsulate(JPEG_FRAMES[:1], has_bot=True)
    spans = twin.frame_offsets(value, 1)
    out = np.empty(4, np.uint8)
    with pytest.raises(ValueError, match="unknown codec"):
        twin.decode_frames("gif", value, spans, out, 4, 1, False, 8, 1)
    with pytest.raises(ValueError):
        twin.decode_frames("jpeg", value, spans, out, 5, 1, False, 8, 1)
    with pytest.raises(MalformedDatasetError, match="libjpeg"):
        twin.decode_frames("jpeg", value, spans, out, 4, 1, False, 8, 1)
    with pytest.raises(MalformedDatasetError, match="not a JPEG 2000"):
        twin.decode_frames("j2k", value, spans, out, 4, 1, False, 8, 1)


# --------------------------------------------------------------------------------------------
# 6. damaged streams: both twins agree, errors are clear, nothing crashes

DAMAGE_SOURCES = [
    "emri_small_RLE.dcm", "SC_rgb_rle_16bit_2frame.dcm", "SC_rgb_dcmtk_+eb+cy+s2.dcm", "JPEG-LL.dcm",
    "emri_small_jpeg_ls_lossless.dcm", "SC_rgb_jls_lossy_line.dcm", "MR_small_jp2klossless.dcm",
    "US1_J2KR.dcm", "examples_ybr_color.dcm",
]  # fmt: skip


def _decoder(kernels, path):
    ds, _ = reference(path)
    syntax = _syntax(path)
    described = description_of(ds)

    def run(value):
        saved = decode.pixels
        decode.pixels = kernels
        try:
            return _outcome(decode_pixel_data, value, syntax, described)
        finally:
            decode.pixels = saved

    return ds.PixelData, run


def _rebuild(value, frames, edit):
    """The Pixel Data with well-formed items around fragments passed through ``edit``."""
    spans = [s for frame in ref_pixels.frame_offsets(value, frames) for s in frame]
    return _item(b"") + b"".join(_item(edit(i, value[s : s + n])) for i, (s, n) in enumerate(spans))


def _agree(a, b):
    if isinstance(a, tuple):
        assert isinstance(b, tuple)
        _same_array(a[0], b[0])
        assert a[1] == b[1]
    else:
        assert a is b
        assert a in (MalformedDatasetError,), a  # a clear error, not a codec's RuntimeError


@pytest.mark.parametrize("source", DAMAGE_SOURCES)
def test_damaged_streams(source):
    native = _need_native()
    path = corpus_path(source)
    value, native_run = _decoder(native, path)
    _, ref_run = _decoder(ref_pixels, path)
    frames = _frames(reference(path)[0])
    rng = random.Random(source)

    # Cut through the item structure: always a clear error.
    for cut in sorted({rng.randrange(1, len(value)) for _ in range(6)} | {1, 8, 12, len(value) - 1}):
        outcome = native_run(value[:cut])
        assert outcome is MalformedDatasetError, cut
        assert ref_run(value[:cut]) is MalformedDatasetError
    # Codestreams cut short inside well-formed items, and seeded byte flips in them.
    for trial in range(8):
        keep = rng.random()
        damaged = _rebuild(value, frames, lambda i, f, keep=keep: f[: max(1, int(len(f) * keep)) & ~1])
        _agree(native_run(damaged), ref_run(damaged))
    for trial in range(12):
        def flip(i, fragment, rng=rng):
            fragment = bytearray(fragment)
            for _ in range(rng.randint(1, 4)):
                fragment[rng.randrange(len(fragment))] ^= rng.randrange(1, 256)
            return bytes(fragment)

        damaged = _rebuild(value, frames, flip)
        _agree(native_run(damaged), ref_run(damaged))


_CRASH_PROBE = """
import random, sys
sys.path.insert(0, sys.argv[1])
import warnings; warnings.simplefilter("ignore")
from pydicom import dcmread
import pacsnode._native.pixels as kernels
from pacsnode.pixels import decode
from pacsnode.errors import MalformedDatasetError
from tests.native.test_pixels import _rebuild, description_of
decode.pixels = kernels
runs = 0
for path in sys.argv[2:]:
    ds = dcmread(path)
    value, syntax = ds.PixelData, ds.file_meta.TransferSyntaxUID
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    rng = random.Random(path)

    def damage(i, fragment):
        fragment = bytearray(fragment[: rng.randrange(1, len(fragment) + 1)] if rng.random() < 0.3 else fragment)
        for _ in range(rng.randint(1, 8)):
            fragment[rng.randrange(len(fragment))] ^= rng.randrange(1, 256)
        return bytes(fragment)

    for trial in range(60):
        # Mostly damaged codestreams inside well-formed items (what reaches the codecs), some
        # damaged item structure.
        damaged = bytearray(_rebuild(value, frames, damage))
        if trial % 4 == 0:
            damaged = damaged[: rng.randrange(1, len(damaged) + 1)]
            damaged[rng.randrange(len(damaged))] ^= rng.randrange(1, 256)
        try:
            decode.decode_pixel_data(damaged, syntax, description_of(ds))
        except (MalformedDatasetError, ValueError, NotImplementedError):
            pass
        runs += 1
print(runs)
"""


def test_damaged_streams_never_crash_the_process():
    _need_native()
    paths = [corpus_path(name) for name in DAMAGE_SOURCES]
    run = subprocess.run([sys.executable, "-c", _CRASH_PROBE, str(ROOT), *paths], capture_output=True, check=False,
                         text=True, timeout=600, cwd=ROOT)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split() == [str(60 * len(paths))]


# --------------------------------------------------------------------------------------------
# 7. which module pacsnode uses


def test_native_module_selected():
    if IN_CI:
        assert native_pixels is not None, "CI=true: the native extension must be built"
    if native_pkg.IS_NATIVE:
        assert native_pkg.pixels is native_pixels
        assert decode.pixels is native_pixels
    else:
        assert native_pkg.pixels is ref_pixels
