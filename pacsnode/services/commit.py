"""Group commit: one thread per process makes batches of instances durable together.

Every instance that arrives while a batch is being written joins the next batch: its
blob is appended to the segment with the others (one fdatasync) and its index entry
committed in the same LMDB transaction. Each submitter's Future resolves only after both.
"""
from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future

from pacsnode.errors import DuplicateInstanceError
from pacsnode.index.base import Index
from pacsnode.services.store import DUPLICATE, REPLACED, STORED, PendingInstance, StoreOutcome
from pacsnode.storage.base import BlobStore

LOGGER = logging.getLogger(__name__)

_MAX_BATCH = 256
_MAX_BATCH_BYTES = 256 * 1024 * 1024
_STOP = object()


class GroupCommitter:
    def __init__(self, index: Index, blobs: BlobStore, duplicate_policy: str = "reject") -> None:
        self.index = index
        self.blobs = blobs
        self.duplicate_policy = duplicate_policy
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
        self._thread.start()

    def submit(self, pending: PendingInstance) -> Future:
        self._queue.put(pending)
        return pending.future

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch, size, stop = [first], first.record.size, False
            while len(batch) < _MAX_BATCH and size < _MAX_BATCH_BYTES:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
                size += item.record.size
            try:
                self._commit(batch)
            except BaseException as exc:  # nothing of the batch is acknowledged
                LOGGER.exception("group commit of %d instances failed", len(batch))
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
            if stop:
                return

    def _commit(self, batch: list[PendingInstance]) -> None:
        existing = self.index.get_instances([p.record.sop_instance_uid for p in batch])
        fresh: list[PendingInstance] = []
        first_in_batch: dict[str, PendingInstance] = {}
        for item in batch:
            uid = item.record.sop_instance_uid
            if uid in existing:
                self._resolve_duplicate(item, existing[uid])
            elif uid in first_in_batch:
                # Two associations sent the same instance at once: judge it against the first.
                self._resolve_duplicate(item, first_in_batch[uid].record, pending_first=True)
            else:
                first_in_batch[uid] = item
                fresh.append(item)
        self._write_blobs(fresh)
        results = self.index.add_instances([p.record for p in fresh])
        for item, added in zip(fresh, results):
            if added.added:
                item.future.set_result(StoreOutcome(STORED, item.record))
            else:  # stored by another process since we looked
                self.blobs.delete(item.record.blob_id)
                self._resolve_duplicate(item, added.existing)
        for item in batch:
            if not item.future.done():  # identical copies of an instance first seen in this batch
                first = first_in_batch[item.record.sop_instance_uid].future
                if first.exception() is not None:
                    item.future.set_exception(first.exception())
                else:
                    item.future.set_result(StoreOutcome(DUPLICATE, first.result().record))

    def _write_blobs(self, items: list[PendingInstance]) -> None:
        in_memory = [p for p in items if p.chunks is not None]
        for item, blob_id in zip(in_memory, self.blobs.put_many([p.chunks for p in in_memory])):
            item.record.blob_id = blob_id
        for item in items:
            if item.spooled is not None:
                item.record.blob_id = self.blobs.adopt(item.spooled)

    def _resolve_duplicate(self, item: PendingInstance, held, pending_first: bool = False) -> None:
        """Identical content: success, no change. Otherwise the duplicate policy decides."""
        record = item.record
        if held.sha256 == record.sha256:
            if pending_first:
                return  # resolved with the first one's outcome once that is committed
            item.future.set_result(StoreOutcome(DUPLICATE, held))
            self._discard(item)
            return
        moved = (held.study_uid, held.series_uid) != (record.study_uid, record.series_uid)
        if self.duplicate_policy != "replace" or moved or pending_first:
            # A replacement may correct an instance, never move it to another series or patient.
            LOGGER.warning("refused other content for stored SOP Instance %s", record.sop_instance_uid)
            item.future.set_exception(DuplicateInstanceError("SOP Instance UID already stored with other content"))
            self._discard(item)
            return
        self._write_blobs([item])
        old = self.index.replace_instance(record)
        self.blobs.delete(old.blob_id)
        LOGGER.info("replaced SOP Instance %s with new content", record.sop_instance_uid)
        item.future.set_result(StoreOutcome(REPLACED, record))

    @staticmethod
    def _discard(item: PendingInstance) -> None:
        if item.spooled is not None:
            item.spooled.unlink(missing_ok=True)
