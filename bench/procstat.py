"""Memory of a server's process tree, polled from /proc (no psutil needed).

A server may fork (storescp --fork, dcmqrscp, a multi-process pacsnode): its footprint is the
sum of the resident sets of the whole tree. Pages shared between parent and children are
counted once per process, so the tree figure is an upper bound; the kernel's own high-water
mark (VmHWM) of the main process is exact but sees that process only.
"""
from __future__ import annotations

import os
import threading
import time

PAGE = os.sysconf("SC_PAGE_SIZE")


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: fields start after the last ')'.
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def tree(pid: int) -> list[int]:
    kids = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def hwm(pid: int) -> int:
    """Peak resident set of one process since it started (VmHWM), in bytes."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def pss(pid: int) -> int:
    """Proportional set size: shared pages divided among the processes sharing them."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_pss(pid: int) -> int:
    return sum(pss(p) for p in tree(pid))


def tree_rss(pid: int) -> int:
    return sum(rss(p) for p in tree(pid))


class PeakRss:
    """Samples the tree's resident set while the ``with`` block runs: ``.peak`` in bytes, and
    ``.max_hwm``, the largest VmHWM of any one process of the tree (exact, not sampled).

    RSS is read every ``interval`` s; the tree is re-listed every ``rescan`` s only, because
    walking all of /proc costs far more than reading a few statm files.
    """

    def __init__(self, pid: int, interval: float = 0.02, rescan: float = 0.25) -> None:
        self.pid, self.interval, self.rescan = pid, interval, rescan
        self.peak = 0
        self.max_hwm = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        pids, listed = [self.pid], 0.0
        while True:
            now = time.monotonic()
            if now - listed >= self.rescan:
                pids, listed = tree(self.pid), now
                self.max_hwm = max([self.max_hwm, *(hwm(p) for p in pids)])
            self.peak = max(self.peak, sum(rss(p) for p in pids))
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        pids = tree(self.pid)
        self.peak = max(self.peak, sum(rss(p) for p in pids))
        self.max_hwm = max([self.max_hwm, *(hwm(p) for p in pids)])
