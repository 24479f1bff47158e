"""The interface every blob store (local disk now, S3 later) implements."""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path


class BlobStore(ABC):
    """Opaque byte blobs under ids the store chooses; knows nothing of DICOM."""

    @abstractmethod
    def put_many(self, blobs: list[list[bytes | memoryview]]) -> list[str]:
        """Write each blob (given as chunks) durably (fsync'd) and return their ids."""

    @abstractmethod
    def adopt(self, path: Path) -> str:
        """Take over a complete, fsync'd file (a large instance spooled to disk)."""

    @abstractmethod
    def read(self, blob_id: str) -> bytes: ...

    @abstractmethod
    def local_path(self, blob_id: str) -> Path | None:
        """A file holding exactly this blob, for senders that stream from files; or None."""

    @abstractmethod
    def delete(self, blob_id: str) -> None: ...

    @abstractmethod
    def close(self) -> None: ...
