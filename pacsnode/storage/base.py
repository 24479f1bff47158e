"""The interface every blob store (local files, later S3 or segments) implements."""
from __future__ import annotations

import re
import uuid
from abc import ABC, abstractmethod
from pathlib import Path

_BLOB_ID = re.compile(r"^[0-9a-f]{32}$")


def new_blob_id() -> str:
    return uuid.uuid4().hex


def check_blob_id(blob_id: str) -> str:
    """Blob ids come from the index; refuse anything that could escape the store."""
    if not _BLOB_ID.match(blob_id):
        raise ValueError(f"invalid blob id {blob_id!r}")
    return blob_id


class BlobStore(ABC):
    @abstractmethod
    def put(self, blob_id: str, chunks: list[bytes | memoryview]) -> None:
        """Write the blob durably (on disk, fsync'd) before returning."""

    @abstractmethod
    def read(self, blob_id: str) -> bytes:
        ...

    @abstractmethod
    def local_path(self, blob_id: str) -> Path:
        """A file path holding the blob, for senders that stream from a file."""

    @abstractmethod
    def delete(self, blob_id: str) -> None:
        ...
