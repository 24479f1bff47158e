"""Micro-benchmark: pacsnode's native header scanner against pydicom on the same bytes.

  python -m pytest bench/test_bench_header.py --benchmark-only

Two pairs per file, both from a Part 10 file already in memory (no disk I/O):
  scan   read_file_meta + scan_dataset for the indexed tags, walking every element as the
         C-STORE path does  vs  dcmread(stop_before_pixels=True)
  index  the store path's index_attributes (scan + decode to index values)  vs  dcmread
         plus reading the same attributes (pydicom converts values lazily, on access)
The goal is a scan at least 30x faster than pydicom; the speed-ups are printed at the end
(bench/conftest.py). Files: a CT from the bench corpus and files of tests/corpus.py.
"""
from __future__ import annotations

import io
import os
import warnings

import numpy as np
import pytest
from pydicom import dcmread

from bench import corpus
from pacsnode._native import IS_NATIVE, header
from pacsnode.dicom.attributes import INDEXED, SCAN_TAGS
from pacsnode.dicom.syntax import encoding_of
from pacsnode.services.store import index_attributes

# As in pacsnode.services.store: a tag no dataset holds makes the scanner walk every element.
WALK_ALL = SCAN_TAGS + (0xFFFFFFFF,)
DEFLATED = "1.2.840.10008.1.2.1.99"
# Corpus files with something to say: syntaxes, sequences, multi-frame, encapsulated pixels.
NAMED = ["CT_small.dcm", "MR_small.dcm", "MR_small_bigendian.dcm", "rtplan.dcm", "emri_small.dcm",
         "693_J2KR.dcm", "waveform_ecg.dcm"]


def bench_ct() -> bytes:
    """One instance of the bench CT corpus (512x512, 16 bits), built in memory."""
    ds = corpus.study_header("ct", 0, 20)
    corpus.set_instance(ds, "ct", 0, 0, corpus.CT_IMAGE)
    ds.PixelData = np.clip(corpus.phantom(512, 512), 0, 4095).astype("<u2").tobytes()
    ds.file_meta = corpus.file_meta(ds)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def syntax(buf: bytes) -> tuple[str, int] | None:
    meta, offset = header.read_file_meta(buf)
    ts = meta.get(0x00020010)
    if not offset or not ts:
        return None
    return ts.rstrip(b"\x00 ").decode("ascii"), offset


def scan_native(buf: bytes) -> dict:
    meta, offset = header.read_file_meta(buf)
    implicit, little = encoding_of(meta[0x00020010].rstrip(b"\x00 ").decode("ascii"))
    return header.scan_dataset(buf, WALK_ALL, implicit, little, offset)


def scan_pydicom(buf: bytes):
    return dcmread(io.BytesIO(buf), stop_before_pixels=True)


def index_native(buf: bytes) -> dict:
    ts, offset = syntax(buf)
    return index_attributes(memoryview(buf)[offset:], ts)


def index_pydicom(buf: bytes) -> dict:
    ds = dcmread(io.BytesIO(buf), stop_before_pixels=True)
    return {kw: ds.get(kw) for kw in INDEXED}


def usable(buf: bytes) -> bool:
    """Part 10, not deflated (inflating is not the scanner's work), read by both sides."""
    found = syntax(buf)
    if found is None or found[0] == DEFLATED:
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scan_native(buf), index_native(buf), index_pydicom(buf)
    except Exception:
        return False
    return True


def load_files() -> dict[str, bytes]:
    from tests.corpus import corpus_files

    files = {"bench_ct": bench_ct()}
    by_name = {os.path.basename(p): p for p in corpus_files()}
    everything = []
    for path in by_name.values():
        with open(path, "rb") as fh:
            buf = fh.read()
        if usable(buf):
            everything.append(buf)
            if os.path.basename(path) in NAMED:
                files[os.path.basename(path)] = buf
    files["whole_corpus"] = everything  # type: ignore[assignment]
    return files


FILES = load_files()
PAIRS = {"scan": (scan_native, scan_pydicom), "index": (index_native, index_pydicom)}


def test_native_is_built():
    assert IS_NATIVE, "pacsnode._native.header is not built: this would time the Python twin"


@pytest.mark.parametrize("side", ["native", "pydicom"])
@pytest.mark.parametrize("what", list(PAIRS))
@pytest.mark.parametrize("name", list(FILES))
def test_header(benchmark, speedups, name, what, side):
    fn = PAIRS[what][0 if side == "native" else 1]
    data = FILES[name]
    bufs = data if isinstance(data, list) else [data]
    benchmark.group = f"{what}: {name}" + (f" ({len(bufs)} files)" if len(bufs) > 1 else "")
    benchmark.extra_info["bytes"] = sum(map(len, bufs))

    def run():
        for buf in bufs:
            fn(buf)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        benchmark(run)
    if benchmark.stats is not None:  # None under --benchmark-disable
        speedups[(what, name)][side] = benchmark.stats.stats.median
