"""One file per blob under <data>/blobs/ab/cd/<id>, written durably (fsync file, rename, fsync dir)."""
from __future__ import annotations

import errno
import os
from pathlib import Path

from pacsnode.errors import OutOfResourcesError
from pacsnode.storage.base import BlobStore, check_blob_id


class FileBlobStore(BlobStore):
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def local_path(self, blob_id: str) -> Path:
        check_blob_id(blob_id)
        return self.root / blob_id[:2] / blob_id[2:4] / blob_id

    def put(self, blob_id: str, chunks: list[bytes | memoryview]) -> None:
        path = self.local_path(blob_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                for chunk in chunks:
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise OutOfResourcesError("disk full: free space under the data folder") from exc
            raise

    def read(self, blob_id: str) -> bytes:
        return self.local_path(blob_id).read_bytes()

    def delete(self, blob_id: str) -> None:
        self.local_path(blob_id).unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
