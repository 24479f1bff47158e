"""The durable-write ceiling of the bench's disk: what any receiver that flushes each
instance before acknowledging it could reach here, with no DICOM at all.

Like an ingest with 4 associations over 2 workers: 2 processes with 2 threads each; every
thread appends one instance's bytes to its process's file and fdatasyncs before the next
(concurrent flushes of a process may be merged by the kernel, as a group commit would).
storescp never flushes, so where this ceiling is below twice storescp's rate, that goal
cannot be met at full durability on this disk.
"""
from __future__ import annotations

import multiprocessing
import os
import threading
import time
from pathlib import Path

PROCESSES, THREADS = 2, 2


def _writer(path: str, size: int, count: int, start: multiprocessing.Event) -> None:
    payload = os.urandom(size)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def append(n: int) -> None:
        for _ in range(n):
            os.write(fd, payload)
            os.fdatasync(fd)

    threads = [threading.Thread(target=append, args=(count // THREADS,)) for _ in range(THREADS)]
    start.wait()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    os.close(fd)


def durable_ceiling(folder: Path, instances: int, size: int) -> dict:
    """Instances/s and MB/s of ``instances`` appends of ``size`` bytes, each flushed."""
    folder.mkdir(parents=True, exist_ok=True)
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    per_process = instances // PROCESSES
    procs = [ctx.Process(target=_writer, args=(str(folder / f"append-{n}"), size, per_process, start))
             for n in range(PROCESSES)]
    for p in procs:
        p.start()
    time.sleep(0.2)
    t0 = time.perf_counter()
    start.set()
    for p in procs:
        p.join()
    wall = time.perf_counter() - t0
    done = PROCESSES * THREADS * (per_process // THREADS)
    for n in range(PROCESSES):
        (folder / f"append-{n}").unlink(missing_ok=True)
    return {"instances": done, "bytes_each": size, "wall_s": wall, "inst_per_s": done / wall,
            "MB_per_s": done * size / wall / 1e6, "writers": f"{PROCESSES} processes x {THREADS} threads",
            "ok": all(p.exitcode == 0 for p in procs)}
