"""Plain HTTP against the node (what dicomweb-client does not expose: raw bytes, statuses)."""
from __future__ import annotations

import uuid

import numpy as np
import requests
from pydicom import Dataset

TIMEOUT = 60


def get(url: str, accept: str | None = None, **params) -> requests.Response:
    headers = {"Accept": accept} if accept else {}
    return requests.get(url, headers=headers, params=params or None, timeout=TIMEOUT)


def parts(response: requests.Response) -> list[tuple[str, bytes]]:
    """(Content-Type, body) of each part of a multipart/related response."""
    ctype = response.headers["Content-Type"]
    assert ctype.startswith("multipart/related"), ctype
    boundary = next(p.split("=", 1)[1].strip('"') for p in ctype.split(";") if p.strip().startswith("boundary="))
    body = response.content
    out = []
    for chunk in body.split(b"--" + boundary.encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, data = chunk.partition(b"\r\n\r\n")
        assert data.endswith(b"\r\n")
        headers = dict(
            line.split(":", 1) for line in head.decode().strip().split("\r\n") if ":" in line
        )
        out.append((headers.get("Content-Type", "").strip(), data[:-2]))
    return out


def multipart_body(items: list[tuple[str, bytes]], boundary: str | None = None) -> tuple[bytes, str]:
    boundary = boundary or uuid.uuid4().hex
    body = b"".join(f"--{boundary}\r\nContent-Type: {ct}\r\n\r\n".encode() + data + b"\r\n" for ct, data in items)
    return body + f"--{boundary}--\r\n".encode(), boundary


def post_stow(url: str, items: list[tuple[str, bytes]], ctype: str | None = None, body: bytes | None = None) -> requests.Response:
    data, boundary = multipart_body(items)
    headers = {
        "Content-Type": ctype or f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json",
    }
    return requests.post(url, data=body if body is not None else data, headers=headers, timeout=TIMEOUT)


def frame_array(data: bytes, ds: Dataset) -> np.ndarray:
    """An uncompressed little endian frame as pydicom shapes one frame."""
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    bits = int(ds.BitsAllocated)
    arr = np.frombuffer(data, dtype=f"<{'i' if signed else 'u'}{bits // 8}")
    spp = int(ds.get("SamplesPerPixel", 1))
    shape = (int(ds.Rows), int(ds.Columns)) + ((spp,) if spp > 1 else ())
    return arr.reshape(shape)


def frames_of(arr: np.ndarray, ds: Dataset) -> list[np.ndarray]:
    n = int(ds.get("NumberOfFrames", 1) or 1)
    return [arr] if n == 1 else [arr[i] for i in range(n)]


def as_sent(dataset: bytes) -> bytes:
    """A file's dataset bytes as DCMTK's storescu sends them: without trailing padding
    (FFFC,FFFC), which it drops, so what the node stored is the rest byte for byte."""
    import struct

    at = dataset.rfind(b"\xfc\xff\xfc\xff")
    while at >= 0:
        for head, fmt in ((12, "<I"), (8, "<I")):
            length_at = at + (8 if head == 12 else 4)
            if at + head <= len(dataset):
                (length,) = struct.unpack_from(fmt, dataset, length_at)
                if at + head + length == len(dataset):
                    return dataset[:at]
        at = dataset.rfind(b"\xfc\xff\xfc\xff", 0, at)
    return dataset
