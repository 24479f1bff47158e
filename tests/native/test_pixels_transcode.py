"""pacsnode.pixels.transcode_to_explicit_le, checked by decoding its output with pydicom.

For every corpus file pydicom decodes (compressed or native, any byte order) and every file DCMTK
encodes in tests/native/test_pixels.py: the output parses as Explicit VR Little Endian, its
pixel array is the original's, and every other attribute is the original's except the ones the
pixel encoding decides (Photometric Interpretation as pydicom reports it after decoding, Planar
Configuration, Number of Frames, Lossy Image Compression, the Extended Offset Table).
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.pixels import get_decoder
from pydicom.uid import ExplicitVRLittleEndian

from pacsnode.dicom.syntax import encoding_of
from pacsnode.dicom.uids import EXPLICIT_VR_BE
from pacsnode.errors import MalformedDatasetError
from pacsnode.pixels import transcode_to_explicit_le
from pacsnode.pixels.decode import CODECS, LOSSY_METHODS
from tests.native.test_pixels import (  # noqa: F401  (dcmtk_file is a fixture)
    DCMTK_CASES,
    ENCAPSULATED,
    NATIVE,
    _name,
    _read_with,
    dcmtk_file,
    reference,
    split,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on odd corpus values
PIXEL_DATA = 0x7FE00010
# Set from the decoded pixels rather than copied.
PIXEL_ENCODING = {0x00280004, 0x00280006, 0x00280008, 0x00282110, 0x00282114, 0x7FE00001, 0x7FE00002, PIXEL_DATA}
_WORDS = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}


def _values(ds, big_endian):
    """Every attribute as comparable values; binary words as numbers, whatever their byte order."""
    out = {}
    for elem in ds:
        if elem.tag.element == 0 and elem.tag.group > 6:
            continue  # group lengths are retired, and pydicom does not write them
        if elem.VR == "SQ":
            out[int(elem.tag)] = [_values(item, big_endian) for item in elem.value]
        elif elem.VR in _WORDS and isinstance(elem.value, bytes):
            size = _WORDS[elem.VR]
            whole = len(elem.value) - len(elem.value) % size
            order = ">" if big_endian else "<"
            out[int(elem.tag)] = np.frombuffer(elem.value[:whole], f"{order}u{size}").tolist()
        else:
            out[int(elem.tag)] = elem.value
    return out


def _transcoded(path):
    dataset, syntax = split(path)
    out = transcode_to_explicit_le(dataset, syntax)
    ds = read_dataset(DicomBytesIO(out), False, True)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def _check(path):
    original, want = reference(path)
    if "PixelData" not in original or isinstance(want, Exception):
        pytest.skip("no pixel data pydicom can decode")
    dataset, syntax = split(path)
    if _read_with(original) != encoding_of(syntax):
        # The syntax lies about the encoding; the scanner goes by the syntax and says so.
        with pytest.raises(MalformedDatasetError):
            transcode_to_explicit_le(dataset, syntax)
        return
    new = _transcoded(path)
    elem = new["PixelData"]
    assert elem.VR == ("OB" if original.BitsAllocated <= 8 else "OW") or syntax not in CODECS
    assert len(elem.value) % 2 == 0

    # The pixels: pydicom reads the native result back as it decoded the original, except that
    # for native data it clears bits above Bits Stored, which JPEG-LS and JPEG 2000 decoding may
    # leave set (mlut_18 has 12 stored bits holding values up to 4095).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = new.pixel_array
    expected = want.copy()
    if new.BitsAllocated > new.BitsStored:
        shift = new.BitsAllocated - new.BitsStored
        np.left_shift(expected, shift, out=expected)
        np.right_shift(expected, shift, out=expected)
    assert got.shape == want.shape and got.dtype.kind == want.dtype.kind and got.itemsize == want.itemsize
    assert np.array_equal(got, expected)

    # The attributes.
    before = _values(original, big_endian=syntax == EXPLICIT_VR_BE)
    after = _values(new, big_endian=False)
    for tag in sorted(set(before) | set(after)):
        if tag not in PIXEL_ENCODING:
            assert before.get(tag) == after.get(tag), f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
    if syntax not in CODECS:
        for tag in PIXEL_ENCODING - {PIXEL_DATA}:
            assert before.get(tag) == after.get(tag)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, properties = get_decoder(syntax).as_array(original)
    assert new.PhotometricInterpretation == properties["photometric_interpretation"]
    if original.SamplesPerPixel > 1:
        assert new.PlanarConfiguration == 0
    assert new.get("NumberOfFrames", 1) == properties["number_of_frames"]
    assert ("NumberOfFrames" in new) == ("NumberOfFrames" in original or properties["number_of_frames"] > 1)
    assert "ExtendedOffsetTable" not in new and "ExtendedOffsetTableLengths" not in new
    if syntax in LOSSY_METHODS:
        assert new.LossyImageCompression == "01"
        assert new.LossyImageCompressionMethod == original.get("LossyImageCompressionMethod", LOSSY_METHODS[syntax])
    else:
        assert new.get("LossyImageCompression") == original.get("LossyImageCompression")
        assert new.get("LossyImageCompressionMethod") == original.get("LossyImageCompressionMethod")


@pytest.mark.parametrize("path", ENCAPSULATED + NATIVE, ids=_name)
def test_corpus_round_trip(path):
    _check(path)


@pytest.mark.parametrize("case", sorted(DCMTK_CASES))
def test_dcmtk_round_trip(dcmtk_file, case):  # noqa: F811 (the fixture)
    _check(dcmtk_file(case))


def test_lossy_attributes_are_kept_when_present(dcmtk_file):  # noqa: F811 (the fixture)
    path = dcmtk_file("jpeg-baseline-ybr422")
    original, _ = reference(path)
    assert original.LossyImageCompression == "01"  # DCMTK records its own compression
    new = _transcoded(path)
    assert new.LossyImageCompressionRatio == original.LossyImageCompressionRatio
    assert new.LossyImageCompressionMethod == original.LossyImageCompressionMethod == "ISO_10918_1"


def test_unsupported_syntaxes_are_refused():
    with pytest.raises(NotImplementedError):
        transcode_to_explicit_le(b"", "1.2.840.10008.1.2.4.100")  # MPEG2
