"""The archive as one object: index, blob store and the services over them, built from config."""
from __future__ import annotations

from dataclasses import dataclass

from pacsnode.config import NodeConfig
from pacsnode.index import LmdbIndex
from pacsnode.index.base import Index
from pacsnode.services.query import QueryService
from pacsnode.services.retrieve import RetrieveService
from pacsnode.services.store import StoreService
from pacsnode.storage import FileBlobStore
from pacsnode.storage.base import BlobStore


@dataclass
class Archive:
    config: NodeConfig
    index: Index
    blobs: BlobStore
    store: StoreService
    query: QueryService
    retrieve: RetrieveService

    @classmethod
    def open(cls, config: NodeConfig) -> "Archive":
        """Open the archive under ``config.data`` (call after fork: LMDB handles do not survive it)."""
        config.data.mkdir(parents=True, exist_ok=True)
        index = LmdbIndex(config.data / "index", map_size=config.index_map_size)
        blobs = FileBlobStore(config.data / "blobs")
        return cls(
            config=config,
            index=index,
            blobs=blobs,
            store=StoreService(index, blobs, config.duplicate_policy),
            query=QueryService(index, blobs, config.ae_title),
            retrieve=RetrieveService(index),
        )

    def close(self) -> None:
        self.index.close()
