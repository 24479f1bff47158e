"""Group commit: batches of instances made durable together, in a two-stage pipeline.

Every instance that arrives while a batch is being written joins the next batch: its
blob is appended to the segment with the others (one fdatasync, the writer thread), then
its index entry is committed in one LMDB transaction (the indexer thread), shared by every
batch written until that transaction holds the index's write lock; the workers' indexers
take that lock in turn, so one worker's batches gather while another's commit. Each
submitter's Future resolves only after both stages; the next batch's blobs are written
while the previous batch's index transaction commits, so the two flushes overlap.
"""
from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future

from pacsnode.errors import DuplicateInstanceError
from pacsnode.index.base import Index
from pacsnode.services.digest import chunks_digest, part10_digest, same_kind
from pacsnode.services.part10 import file_dataset
from pacsnode.services.store import DUPLICATE, REPLACED, STORED, PendingInstance, StoreOutcome
from pacsnode.storage.base import BlobStore
from pacsnode.storage.inline import new_inline_id

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
        self._indexing: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="group-commit-write", daemon=True)
        self._indexer = threading.Thread(target=self._run_indexer, name="group-commit-index", daemon=True)
        self._thread.start()
        self._indexer.start()

    def submit(self, pending: PendingInstance) -> Future:
        if self._fits_inline(pending):
            # Nothing to write before the index transaction: straight to the indexer, which
            # also tells a duplicate (held, or earlier in the same transaction).
            self._keep_inline(pending)
            self._indexing.put(([pending], ([pending], {pending.record.sop_instance_uid: pending})))
        else:
            self._queue.put(pending)
        return pending.future

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join()
        self._indexer.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                self._indexing.put(_STOP)
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
                self._indexing.put((batch, self._write(batch)))
            except BaseException as exc:
                _fail(batch, exc)
            if stop:
                self._indexing.put(_STOP)
                return

    def _run_indexer(self) -> None:
        stopping = False
        while not stopping:
            job = self._indexing.get()
            if job is _STOP:
                return
            jobs = [job]

            def late() -> list:
                # Called once the transaction holds the write lock: what was written while
                # another worker committed joins it.
                nonlocal stopping
                first = len(jobs)
                while not stopping:
                    try:
                        more = self._indexing.get_nowait()
                    except queue.Empty:
                        break
                    if more is _STOP:
                        stopping = True
                    else:
                        jobs.append(more)
                return [item.record for _, (written, _) in jobs[first:] for item in written]

            try:
                self._index(jobs, late)
            except BaseException as exc:
                _fail([item for batch, _ in jobs for item in batch], exc)

    def _commit(self, batch: list[PendingInstance]) -> None:
        """Both stages for one batch, in the caller's thread."""
        self._index([(batch, self._write(batch))])

    def _write(self, batch: list[PendingInstance]) -> tuple[list[PendingInstance], dict[str, PendingInstance]]:
        """Judge duplicates and make the new blobs durable; returns what the index gets."""
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
        return fresh, first_in_batch

    def _index(self, jobs: list[tuple[list[PendingInstance], tuple]], late=None) -> None:
        """One index transaction for the written batches ``(batch, (fresh, first_in_batch))``;
        ``late`` appends to ``jobs`` the batches that join it once it holds the write lock."""
        results = self.index.add_instances([item.record for _, (written, _) in jobs for item in written], late)
        fresh = [item for _, (written, _) in jobs for item in written]
        for item, added in zip(fresh, results):
            if added.added:
                item.future.set_result(StoreOutcome(STORED, item.record))
            else:  # stored meanwhile: by another process, an earlier batch or one in this transaction
                if item.record.inline is None:  # an inline blob was never written
                    self.blobs.delete(item.record.blob_id)
                self._resolve_duplicate(item, added.existing)
        for batch, (_, first_in_batch) in jobs:
            for item in batch:
                if not item.future.done():  # identical copies of an instance first seen in its batch
                    first = first_in_batch[item.record.sop_instance_uid].future
                    if first.exception() is not None:
                        item.future.set_exception(first.exception())
                    else:
                        item.future.set_result(StoreOutcome(DUPLICATE, first.result().record))

    def _write_blobs(self, items: list[PendingInstance]) -> None:
        to_segments = []
        for item in items:
            if item.chunks is None:
                continue
            if self._fits_inline(item):
                self._keep_inline(item)
            else:
                to_segments.append(item)
        for item, blob_id in zip(to_segments, self.blobs.put_many([p.chunks for p in to_segments])):
            item.record.blob_id = blob_id
        for item in items:
            if item.spooled is not None:
                item.record.blob_id = self.blobs.adopt(item.spooled)

    def _fits_inline(self, item: PendingInstance) -> bool:
        return item.chunks is not None and self.index.keeps_inline(sum(len(c) for c in item.chunks))

    @staticmethod
    def _keep_inline(item: PendingInstance) -> None:
        """Written by the index transaction itself: no segment flush for this one."""
        item.record.inline = b"".join(item.chunks)
        item.record.blob_id = new_inline_id()

    def _resolve_duplicate(self, item: PendingInstance, held, pending_first: bool = False) -> None:
        """Identical content: success, no change. Otherwise the duplicate policy decides."""
        record = item.record
        if _same_content(held, item):
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


def _same_content(held, item: PendingInstance) -> bool:
    """Whether a newcomer holds the content of the held record (hashed the held one's way:
    records from before XXH3 carry SHA-256)."""
    record = item.record
    if same_kind(held.digest, record.digest):
        return held.digest == record.digest
    if item.spooled is not None:
        return part10_digest(file_dataset(item.spooled), record.transfer_syntax, like=held.digest) == held.digest
    return chunks_digest(item.chunks[1:], record.transfer_syntax, like=held.digest) == held.digest


def _fail(batch: list[PendingInstance], exc: BaseException) -> None:
    """Nothing of a failed batch is acknowledged."""
    LOGGER.error("group commit of %d instances failed: %s", len(batch), exc)
    for item in batch:
        if not item.future.done():
            item.future.set_exception(exc)
