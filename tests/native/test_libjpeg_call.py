"""pacsnode._native.libjpeg_call: pylibjpeg-libjpeg's C++ decoder called in one pass.

Its reference is the library's public ``_libjpeg.decode`` (parameter pass, then decode): the
same bytes for every JPEG and JPEG-LS frame of the corpus, a size mismatch reported (not
written past), and damaged streams refused with libjpeg's error rather than a crash.
"""
from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
from pydicom import dcmread
from pydicom.encaps import generate_frames

from pacsnode.pixels.decode import CODECS
from tests.corpus import corpus_files
from tests.peers import require

_libjpeg = pytest.importorskip("_libjpeg")
try:
    libjpeg_call = importlib.import_module("pacsnode._native.libjpeg_call")
except ImportError:
    libjpeg_call = None


def _need_direct():
    require(libjpeg_call is not None, "pacsnode._native.libjpeg_call not built (python setup.py build_ext --inplace)")
    return libjpeg_call


def _jpeg_frames():
    frames = []
    for path in corpus_files():
        try:
            ds = dcmread(path)
            syntax = str(ds.file_meta.TransferSyntaxUID)
            if CODECS.get(syntax) not in ("jpeg", "jpegls") or "PixelData" not in ds:
                continue
            count = int(ds.get("NumberOfFrames", 1) or 1)
            for i, frame in enumerate(generate_frames(ds.PixelData, number_of_frames=count)):
                frames.append((f"{path.rsplit('/', 1)[-1]}#{i}", frame))
        except Exception:
            continue  # unreadable corpus files are the pixel tests' business
    return frames


FRAMES = _jpeg_frames()


def test_bound_to_the_installed_library():
    # pylibjpeg-libjpeg is a dependency: losing the direct path would halve JPEG throughput silently.
    assert _need_direct().available()


def test_corpus_has_jpeg_frames():
    assert len(FRAMES) >= 30


@pytest.mark.parametrize("name,frame", FRAMES, ids=[n for n, _ in FRAMES])
def test_same_bytes_as_the_public_decoder(name, frame):
    direct = _need_direct()
    status, want, _ = _libjpeg.decode(frame, 0, False)
    if not status.startswith(b"0::::"):
        code, message = direct.decode_into(frame, bytearray(1024))
        assert code != 0 and message
        return
    got = bytearray(len(want))
    assert direct.decode_into(frame, got) == (0, "")
    assert got == want
    code, _ = direct.decode_into(frame, bytearray(len(want) + 2))
    assert code == direct.SIZE_MISMATCH


def test_damaged_streams_are_refused_without_crashing():
    _need_direct()
    # A crash would kill the interpreter: run the batch in a child and count its answers.
    script = """
import random, sys
from pydicom import dcmread
from pydicom.encaps import generate_frames
from pacsnode._native import libjpeg_call
frame = next(generate_frames(dcmread(sys.argv[1]).PixelData, number_of_frames=1))
rng = random.Random(7)
answers = 0
for n in range(200):
    data = bytearray(frame)
    if n % 2:
        data = data[: rng.randrange(1, len(data))]
    else:
        for _ in range(8):
            data[rng.randrange(len(data))] = rng.randrange(256)
    code, message = libjpeg_call.decode_into(bytes(data), bytearray(64 * 64 * 2))
    answers += 1
print(answers)
"""
    source = next(p for p in corpus_files() if p.endswith("MR_small_jpeg_ls_lossless.dcm"))
    run = subprocess.run([sys.executable, "-c", script, source], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["200"]


def test_empty_input_is_refused():
    direct = _need_direct()
    assert direct.decode_into(b"", bytearray(4))[0] == direct.SIZE_MISMATCH
