"""Blob storage: opaque byte blobs keyed by our own UUIDs; knows nothing of DICOM."""
from pacsnode.storage.base import BlobStore
from pacsnode.storage.files import FileBlobStore

__all__ = ["BlobStore", "FileBlobStore"]
