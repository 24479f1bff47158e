"""Pixel decoding and frame extraction: pacsnode.pixels against pydicom, same files, same run.

    python bench/bench_pixels.py            # corpus + DCMTK-encoded larger images (~1-2 min)
    python bench/bench_pixels.py --smoke    # one small file per syntax, one run each (seconds)

Decoding: MB/s of output pixels (the array's bytes), per transfer syntax, of
``pacsnode.pixels.decode_dataset(dataset bytes, syntax)`` (header scan included) against
pydicom's ``pixel_array`` on a Dataset read beforehand (so pydicom's parse is not counted),
both with the same codecs (pylibjpeg-libjpeg, pylibjpeg-openjpeg; pydicom decodes RLE with
pylibjpeg-rle when installed, its "pydicom" plugin row is shown too). Frame extraction: frames/s
of ``pacsnode._native.pixels.frame_offsets`` (spans, no copy) and of the same plus each frame's
bytes, against ``pydicom.encaps.generate_frames``. Each figure is the best of repeated runs
lasting at least ``--min-time`` seconds, both sides taking turns. No thresholds: the machine is
shared, figures are noisy.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from pydicom import dcmread
from pydicom.encaps import generate_frames
from pydicom.pixels import pixel_array as pydicom_pixel_array
from pydicom.uid import UID

import pacsnode._native as native
from pacsnode._native import header, pixels
from pacsnode.pixels import decode_dataset
from pacsnode.pixels.decode import CODECS
from tests.corpus import corpus_files

# Larger images DCMTK encodes from uncompressed corpus files: (program, options, input).
DCMTK_INPUTS = [
    ("dcmcrle", [], "RG3_UNCR.dcm"), ("dcmcrle", [], "MR2_UNCR.dcm"), ("dcmcrle", [], "US1_UNCR.dcm"),
    ("dcmcrle", [], "OBXXXX1A_2frame.dcm"), ("dcmcrle", [], "emri_small.dcm"), ("dcmcrle", [], "CT_small.dcm"),
    ("dcmcjpeg", ["+e1"], "MR2_UNCR.dcm"), ("dcmcjpeg", ["+e1"], "US1_UNCR.dcm"),
    ("dcmcjpeg", ["+el"], "MR2_UNCR.dcm"), ("dcmcjpeg", ["+el"], "emri_small.dcm"),
    ("dcmcjpeg", ["+ee"], "MR2_UNCR.dcm"), ("dcmcjpeg", ["+eb"], "US1_UNCR.dcm"),
    ("dcmcjpeg", ["+eb"], "vlut_04.dcm"), ("dcmcjpeg", ["+eb", "+fs", "4", "-ot"], "OBXXXX1A_2frame.dcm"),
    ("dcmcjpls", [], "MR2_UNCR.dcm"), ("dcmcjpls", [], "US1_UNCR.dcm"), ("dcmcjpls", [], "emri_small.dcm"),
    ("dcmcjpls", ["+en"], "MR2_UNCR.dcm"), ("dcmcjpls", ["+en"], "US1_UNCR.dcm"),
]  # fmt: skip


SHORT_NAMES = {
    "1.2.840.10008.1.2.5": "RLE Lossless (.5)",
    "1.2.840.10008.1.2.4.50": "JPEG Baseline (.50)",
    "1.2.840.10008.1.2.4.51": "JPEG Extended (.51)",
    "1.2.840.10008.1.2.4.57": "JPEG Lossless P14 (.57)",
    "1.2.840.10008.1.2.4.70": "JPEG Lossless SV1 (.70)",
    "1.2.840.10008.1.2.4.80": "JPEG-LS Lossless (.80)",
    "1.2.840.10008.1.2.4.81": "JPEG-LS Near-Lossless (.81)",
    "1.2.840.10008.1.2.4.90": "JPEG 2000 Lossless (.90)",
    "1.2.840.10008.1.2.4.91": "JPEG 2000 (.91)",
}


def best_times(fns, min_time: float, min_runs: int) -> list[float]:
    """Seconds per call of each function: the fastest of runs repeated for at least ``min_time``.

    The functions take turns, so that both sides of a comparison run in the same conditions
    (allocator state, other load on a shared machine).
    """
    best = [float("inf")] * len(fns)
    spent, runs = 0.0, 0
    while runs < min_runs or spent < min_time:
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            took = time.perf_counter() - start
            best[i] = min(best[i], took)
            spent += took
        runs += 1
    return best


def split(path: str) -> tuple[bytes, str] | None:
    raw = Path(path).read_bytes()
    meta, offset = header.read_file_meta(raw)
    if 0x00020010 not in meta:
        return None
    return raw[offset:], meta[0x00020010].rstrip(b"\0 ").decode()


def usable(path: str):
    """(dataset bytes, syntax, pydicom Dataset, frames) when both sides decode it identically."""
    found = split(path)
    if not found or found[1] not in CODECS:
        return None
    dataset, syntax = found
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = dcmread(path)
            want = pydicom_pixel_array(ds)
            got = decode_dataset(dataset, syntax)[0]
        except Exception:
            return None  # pydicom cannot decode it, or the syntax lies about the encoding
    if not (np.array_equal(got, want) and got.dtype == want.dtype):
        raise SystemExit(f"{path}: pacsnode and pydicom disagree; run the tests")
    return dataset, syntax, ds, int(ds.get("NumberOfFrames", 1) or 1)


def dcmtk_files(folder: Path, sources: dict[str, str]) -> list[str]:
    made = []
    for program, options, name in DCMTK_INPUTS:
        exe = f"/usr/bin/{program}"
        if name not in sources or not os.path.exists(exe):
            continue
        out = folder / f"{Path(name).stem}_{program}{''.join(options).replace(' ', '')}.dcm"
        run = subprocess.run([exe, *options, sources[name], str(out)], capture_output=True, check=False)
        if run.returncode == 0:
            made.append(str(out))
    return made


def bench_decoding(files, min_time, min_runs):
    rows = defaultdict(lambda: [0, 0, 0.0, 0.0, 0.0])  # syntax: files, bytes, ours s, pydicom s, pure s
    for path, (dataset, syntax, ds, _) in files:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nbytes = decode_dataset(dataset, syntax)[0].nbytes
            fns = [lambda d=dataset, s=syntax: decode_dataset(d, s), lambda d=ds: pydicom_pixel_array(d)]
            if syntax == "1.2.840.10008.1.2.5":  # pydicom's own RLE decoder, without pylibjpeg-rle
                fns.append(lambda d=ds: pydicom_pixel_array(d, decoding_plugin="pydicom"))
            ours, theirs, *pure = best_times(fns, min_time, min_runs)
            pure = pure[0] if pure else 0.0
        row = rows[syntax]
        row[0] += 1
        row[1] += nbytes
        row[2] += ours
        row[3] += theirs
        row[4] += pure
        print(f"  {Path(path).name:48s} {nbytes / 1e6:7.2f} MB  ours {nbytes / ours / 1e6:8.1f} MB/s"
              f"  pydicom {nbytes / theirs / 1e6:8.1f} MB/s  x{theirs / ours:5.2f}", flush=True)  # fmt: skip
    return rows


def bench_frames(files, min_time, min_runs):
    totals = [0, 0.0, 0.0, 0.0]  # frames, offsets s, offsets+bytes s, pydicom s
    for path, (_, _, ds, count) in files:
        value = ds.PixelData
        view = memoryview(value)
        frames = len(pixels.frame_offsets(value, count))

        def with_bytes(value=value, view=view, count=count):
            return [view[spans[0][0] : spans[0][0] + spans[0][1]].tobytes() if len(spans) == 1
                    else b"".join(view[s : s + n] for s, n in spans)
                    for spans in pixels.frame_offsets(value, count)]  # fmt: skip

        times = best_times([lambda v=value, c=count: pixels.frame_offsets(v, c), with_bytes,
                            lambda v=value, c=count: list(generate_frames(v, number_of_frames=c))],
                           min_time, min_runs)  # fmt: skip
        totals[0] += frames
        for i, took in enumerate(times, 1):
            totals[i] += took
    return totals


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="one small file per syntax, one run each")
    parser.add_argument("--min-time", type=float, default=0.3, help="seconds each figure is repeated for")
    parser.add_argument("--no-dcmtk", action="store_true", help="corpus files only")
    parser.add_argument("--only", metavar="TEXT", help="only files whose name contains TEXT")
    args = parser.parse_args(argv)
    min_time, min_runs = (0.0, 1) if args.smoke else (args.min_time, 3)
    if not native.IS_NATIVE:
        print("warning: the native kernels are not built; measuring the pure-Python twins", file=sys.stderr)

    corpus = corpus_files()
    paths = [p for p in corpus if split(p) and split(p)[1] in CODECS]
    with tempfile.TemporaryDirectory() as tmp:
        if not (args.smoke or args.no_dcmtk):
            paths += dcmtk_files(Path(tmp), {Path(p).name: p for p in corpus})
        files = [(p, found) for p in paths if (not args.only or args.only in Path(p).name) and (found := usable(p))]
        if args.smoke:  # the smallest file of each syntax
            smallest = {}
            for path, found in sorted(files, key=lambda f: len(f[1][0])):
                smallest.setdefault(found[1], (path, found))
            files = list(smallest.values())

        print(f"decoding ({len(files)} files, native={native.IS_NATIVE})")
        rows = bench_decoding(files, min_time, min_runs)
        frames = bench_frames(files, min_time, min_runs)

    print("\n| transfer syntax | files | output MB | pacsnode MB/s | pydicom MB/s | speed-up |")
    print("|---|---:|---:|---:|---:|---:|")
    for syntax, (count, nbytes, ours, theirs, pure) in sorted(rows.items()):
        mb = nbytes / 1e6
        print(f"| {SHORT_NAMES.get(syntax, UID(syntax).name)} | {count} | {mb:.1f} | {mb / ours:.0f} | {mb / theirs:.0f} | {theirs / ours:.2f}x |")
        if pure:
            print(f"| RLE, vs pydicom's own RLE plugin | {count} | {mb:.1f} | {mb / ours:.0f} | {mb / pure:.0f} "
                  f"| {pure / ours:.2f}x |")  # fmt: skip
    count, offsets, with_bytes, theirs = frames
    print(f"\n| frame extraction ({count} frames) | frames/s | vs pydicom generate_frames |")
    print("|---|---:|---:|")
    print(f"| pydicom generate_frames | {count / theirs:,.0f} | 1.00x |")
    print(f"| pacsnode frame_offsets (spans) | {count / offsets:,.0f} | {theirs / offsets:.1f}x |")
    print(f"| pacsnode frame_offsets + frame bytes | {count / with_bytes:,.0f} | {theirs / with_bytes:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
