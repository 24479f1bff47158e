"""The archive as one object: index, blob store and the services over them, built from config."""
from __future__ import annotations

from dataclasses import dataclass

from pacsnode.config import NodeConfig
from pacsnode.index import LmdbIndex
from pacsnode.index.base import Index
from pacsnode.index.tables import WorkflowTables
from pacsnode.services.commit import GroupCommitter
from pacsnode.services.identity import IdentityChecker
from pacsnode.services.workflow import workflow_hook
from pacsnode.services.query import QueryService
from pacsnode.services.query_encoded import EncodedFind
from pacsnode.services.retrieve import RetrieveService
from pacsnode.services.store import StoreService
from pacsnode.storage import LocalBlobStore


@dataclass
class Archive:
    config: NodeConfig
    index: Index
    blobs: LocalBlobStore
    committer: GroupCommitter
    store: StoreService
    query: QueryService
    retrieve: RetrieveService
    find_encoded: EncodedFind
    # Orders, reconciliation, audit, MPPS and outgoing messages, in the index's environment.
    tables: WorkflowTables | None = None

    @classmethod
    def open(cls, config: NodeConfig) -> "Archive":
        """Open the archive under ``config.data`` (call after fork: LMDB handles do not survive it)."""
        config.data.mkdir(parents=True, exist_ok=True)
        index = LmdbIndex(config.data / "index", map_size=config.index_map_size)
        blobs = LocalBlobStore(config.data / "blobs", inline=index)
        committer = GroupCommitter(index, blobs, config.duplicate_policy)
        tables = WorkflowTables(index)
        index.after_add = workflow_hook(tables, config)
        checker = IdentityChecker(tables, config.identity_policy, config.order_feed) if config.order_feed else None
        query = QueryService(index, blobs, config.ae_title)
        return cls(
            config=config,
            index=index,
            blobs=blobs,
            committer=committer,
            store=StoreService(committer, checker),
            query=query,
            retrieve=RetrieveService(index),
            find_encoded=EncodedFind(query),
            tables=tables,
        )

    def close(self) -> None:
        self.committer.close()
        self.blobs.close()
        self.index.close()
