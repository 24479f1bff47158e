"""Append-only segment files: many blobs per file, one fdatasync per batch.

Creating a file costs about 1 ms on the reference disk before any fsync, which caps a
file-per-instance archive near 1,000 instances/s; appending a batch of instances to one
open segment and syncing it once does not. Blob ids name the segment, offset and length.
Each process appends to segments of its own, so writers never share a file offset.
"""
from __future__ import annotations

import errno
import os
import re
import threading
import uuid
from pathlib import Path

from pacsnode.errors import OutOfResourcesError

_SEGMENT_ID = re.compile(r"^([0-9a-f]{32})-([0-9]+)-([0-9]+)$")
SEGMENT_LIMIT = 1 << 30  # start a new segment past 1 GiB


def parse_segment_id(blob_id: str) -> tuple[str, int, int] | None:
    m = _SEGMENT_ID.match(blob_id)
    return (m.group(1), int(m.group(2)), int(m.group(3))) if m else None


class SegmentWriter:
    """Appends batches of blobs to this process's current segment (thread-safe)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._name = ""
        self._size = 0
        self._pid = os.getpid()

    def _open_new(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._name = uuid.uuid4().hex
        self._fd = os.open(self.root / f"{self._name}.seg", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        self._size = 0
        dir_fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the new segment's directory entry must survive a crash too
        finally:
            os.close(dir_fd)

    def append_many(self, blobs: list[list[bytes | memoryview]]) -> list[str]:
        """Write every blob (a list of chunks each), fdatasync once, return their ids."""
        with self._lock:
            if self._fd is None or self._pid != os.getpid() or self._size >= SEGMENT_LIMIT:
                self._pid = os.getpid()
                self._open_new()
            ids = []
            offset = self._size
            chunks: list[bytes | memoryview] = []
            for blob in blobs:
                length = sum(len(c) for c in blob)
                ids.append(f"{self._name}-{offset}-{length}")
                offset += length
                chunks.extend(blob)
            try:
                _writev_all(self._fd, chunks)
                os.fdatasync(self._fd)
            except OSError as exc:
                # A partial append leaves unreferenced bytes; later appends go to a new segment.
                self._fd = None
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise OutOfResourcesError("disk full: free space under the data folder") from exc
                raise
            self._size = offset
            return ids

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def _writev_all(fd: int, chunks: list[bytes | memoryview]) -> None:
    views = [memoryview(c) for c in chunks if len(c)]
    iov_max = os.sysconf("SC_IOV_MAX")
    while views:
        written = os.writev(fd, views[:iov_max])
        while written and views:
            if written >= len(views[0]):
                written -= len(views[0])
                views.pop(0)
            else:
                views[0] = views[0][written:]
                written = 0


def read_segment_blob(root: Path, blob_id: str) -> bytes:
    parsed = parse_segment_id(blob_id)
    if parsed is None:
        raise ValueError(f"invalid segment blob id {blob_id!r}")
    name, offset, length = parsed
    fd = os.open(Path(root) / f"{name}.seg", os.O_RDONLY)
    try:
        data = os.pread(fd, length, offset)
    finally:
        os.close(fd)
    if len(data) != length:
        raise OSError(f"segment {name} is shorter than blob {blob_id}")
    return data
