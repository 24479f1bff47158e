"""Blobs on the local disk: small ones appended to segments, large ones as files of their own.

Layout under the root: ``segments/<id>.seg`` and ``files/ab/cd/<id>`` (a 32-hex id). Blobs the
index keeps itself (``inline:`` ids, see storage.inline) are read and deleted through it.
"""
from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

from pacsnode.storage.base import BlobStore
from pacsnode.storage.inline import InlineBlobs, is_inline
from pacsnode.storage.segments import SegmentWriter, parse_segment_id, read_segment_blob

_FILE_ID = re.compile(r"^[0-9a-f]{32}$")


class LocalBlobStore(BlobStore):
    def __init__(self, root: Path, inline: InlineBlobs | None = None) -> None:
        self.root = Path(root)
        self.inline = inline
        self.segments = self.root / "segments"
        self.files = self.root / "files"
        self.incoming = self.root / "incoming"
        for folder in (self.segments, self.files, self.incoming):
            folder.mkdir(parents=True, exist_ok=True)
        self._writer = SegmentWriter(self.segments)

    def put_many(self, blobs: list[list[bytes | memoryview]]) -> list[str]:
        return self._writer.append_many(blobs) if blobs else []

    def adopt(self, path: Path) -> str:
        blob_id = uuid.uuid4().hex
        target = self._file_path(blob_id)
        created = not target.parent.exists()
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        fsync_file(target.parent)
        if created:
            fsync_file(target.parent.parent)
            fsync_file(target.parent.parent.parent)
        return blob_id

    def spool_path(self) -> Path:
        """A fresh path on the same file system, for a large instance received in pieces."""
        return self.incoming / f"{uuid.uuid4().hex}.part"

    def _file_path(self, blob_id: str) -> Path:
        return self.files / blob_id[:2] / blob_id[2:4] / blob_id

    def read(self, blob_id: str) -> bytes:
        if parse_segment_id(blob_id):
            return read_segment_blob(self.segments, blob_id)
        if is_inline(blob_id):
            if self.inline is None:
                raise FileNotFoundError(f"{blob_id} is kept by the index, which this store was not given")
            return self.inline.read_blob(blob_id)
        return self.local_path(blob_id).read_bytes()

    def local_path(self, blob_id: str) -> Path | None:
        if _FILE_ID.match(blob_id):
            return self._file_path(blob_id)
        if parse_segment_id(blob_id) or is_inline(blob_id):
            return None
        raise ValueError(f"invalid blob id {blob_id!r}")

    def delete(self, blob_id: str) -> None:
        # Segment space is reclaimed by compaction (not yet written), never in place.
        if is_inline(blob_id):
            if self.inline is not None:
                self.inline.delete_blob(blob_id)
            return
        path = self.local_path(blob_id)
        if path is not None:
            path.unlink(missing_ok=True)

    def close(self) -> None:
        self._writer.close()


def fsync_file(path: Path) -> None:
    """Flush a file, or a folder's entries, to the device."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
