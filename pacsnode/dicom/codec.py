"""pydicom Datasets to and from the bytes of one encoding (no File Meta), for messages."""
from __future__ import annotations

from io import BytesIO

from pydicom import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset


def decode_dataset(data: bytes | memoryview, implicit: bool, little: bool) -> Dataset:
    return read_dataset(BytesIO(data), implicit, little)


def encode_dataset(ds: Dataset, implicit: bool, little: bool) -> bytes:
    buf = DicomBytesIO()
    buf.is_implicit_VR, buf.is_little_endian = implicit, little
    write_dataset(buf, ds)
    return buf.getvalue()
