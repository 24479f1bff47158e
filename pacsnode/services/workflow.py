"""What the index records for the workflow as instances are committed: reconciliation
items (``services.identity``) and, when studies are announced (IAN), when each study last
received an instance (the stability rule of ``services.completion``)."""
from __future__ import annotations

import time
from typing import Callable

from pacsnode.config import NodeConfig
from pacsnode.index.tables import WorkflowTables
from pacsnode.services.identity import record_outcomes


def workflow_hook(tables: WorkflowTables, config: NodeConfig) -> Callable:
    """``LmdbIndex.after_add``: runs inside the transaction that indexes a batch."""
    track = bool(config.ian)

    def after_add(txn, records: list) -> None:
        if not records:
            return
        tx = None
        if any(r.identity for r in records):
            tx = tables.bind(txn)
            record_outcomes(tx, records)
        if track:
            tx = tx or tables.bind(txn)
            now = time.time()
            for study_uid in {r.study_uid for r in records if not r.quarantined}:
                tx.put("recent", study_uid, now)

    return after_add
