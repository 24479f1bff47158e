"""Blob storage: opaque byte blobs keyed by ids the store chooses; knows nothing of DICOM."""
from pacsnode.storage.base import BlobStore
from pacsnode.storage.local import LocalBlobStore

__all__ = ["BlobStore", "LocalBlobStore"]
