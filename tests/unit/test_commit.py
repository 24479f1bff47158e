"""Group commit: concurrent stores share batches, and every acknowledged instance survives a reopen."""
from __future__ import annotations

import threading

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from pacsnode.config import NodeConfig
from pacsnode.errors import DuplicateInstanceError
from pacsnode.services.archive import Archive
from pacsnode.services.store import DUPLICATE, STORED
from pacsnode.storage import LocalBlobStore
from pacsnode.storage.inline import is_inline, new_inline_id


def encoded(sop_uid: str, study: str = "1.2.3", series: str = "1.2.3.4", pixel: bytes = b"\x01" * 64) -> bytes:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.PatientID = "P1"
    ds.PatientName = "Test^Batch"
    ds.Modality = "OT"
    ds.add_new(0x7FE00010, "OB", pixel)
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    write_dataset(buf, ds)
    return buf.getvalue()


def count_transactions(archive: Archive) -> list[int]:
    """The number of instances in each index transaction from now on."""
    transactions: list[int] = []
    real_add = archive.index.add_instances

    def counting_add(records, late=None):
        results = real_add(records, late)
        transactions.append(len(results))
        return results

    archive.index.add_instances = counting_add
    return transactions


@pytest.fixture
def archive(tmp_path):
    archive = Archive.open(NodeConfig(data=tmp_path, index_map_size=1 << 28))
    yield archive
    archive.close()


@pytest.mark.parametrize("pixel_bytes,kept", [(64, "inline"), (80_000, "segment")])
def test_concurrent_stores_are_batched_and_durable(tmp_path, pixel_bytes, kept):
    """Small instances go into the index transaction itself, larger ones into segments; either
    way concurrent stores share commits and everything acknowledged survives a reopen."""
    archive = Archive.open(NodeConfig(data=tmp_path, index_map_size=1 << 28))
    uids = [generate_uid() for _ in range(200)]
    pixel = b"\x01" * pixel_bytes
    transactions = count_transactions(archive)
    results: list[str] = []

    def send(chunk: list[str]) -> None:
        for uid in chunk:
            results.append(archive.store.store(encoded(uid, pixel=pixel), ExplicitVRLittleEndian).result)

    threads = [threading.Thread(target=send, args=(uids[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(STORED) == 200
    assert sum(transactions) == 200
    assert max(transactions) > 1, "concurrent stores never shared a commit"
    archive.close()

    reopened = Archive.open(NodeConfig(data=tmp_path, index_map_size=1 << 28))
    try:
        held = reopened.index.get_instances(uids)
        assert set(held) == set(uids)
        assert all(is_inline(r.blob_id) == (kept == "inline") for r in held.values())
        for uid in uids[:20]:
            assert reopened.blobs.read(held[uid].blob_id).endswith(encoded(uid, pixel=pixel))
    finally:
        reopened.close()


def test_inline_blobs_follow_their_instance(archive):
    """An inline blob is written with its index entry, read back through the blob store,
    refused twice without a second copy, and deleted through the store."""
    uid = generate_uid()
    stored = archive.store.store(encoded(uid), ExplicitVRLittleEndian).record
    assert is_inline(stored.blob_id) and archive.blobs.local_path(stored.blob_id) is None
    assert archive.blobs.read(stored.blob_id).endswith(encoded(uid))
    again = archive.store.store(encoded(uid), ExplicitVRLittleEndian)
    assert again.result == DUPLICATE and again.record.blob_id == stored.blob_id
    archive.blobs.delete(stored.blob_id)
    with pytest.raises(FileNotFoundError):
        archive.blobs.read(stored.blob_id)


def test_index_past_half_full_sends_small_instances_to_segments(tmp_path):
    archive = Archive.open(NodeConfig(data=tmp_path, index_map_size=1 << 22))
    try:
        records = [archive.store.store(encoded(generate_uid(), pixel=b"\x05" * 30_000), ExplicitVRLittleEndian).record
                   for _ in range(100)]
        kinds = [is_inline(r.blob_id) for r in records]
        assert kinds[0] and not kinds[-1], "a 4 MiB index kept every 30 KB instance inline"
        for record in records[::10]:
            assert archive.blobs.read(record.blob_id).endswith(b"\x05" * 30_000)
    finally:
        archive.close()


def test_same_instance_twice_in_one_batch(archive):
    uid = generate_uid()
    first = archive.store.prepare(encoded(uid), ExplicitVRLittleEndian)
    same = archive.store.prepare(encoded(uid), ExplicitVRLittleEndian)
    other = archive.store.prepare(encoded(uid, pixel=b"\x02" * 64), ExplicitVRLittleEndian)
    archive.committer._commit([first, same, other])
    assert first.future.result().result == STORED
    assert same.future.result().result == DUPLICATE
    with pytest.raises(DuplicateInstanceError):
        other.future.result()


def test_copies_submitted_at_once_are_judged_by_the_index(archive):
    """Small instances go from submit() straight to the indexer: copies of one instance sent
    at once are told apart by the index transactions, not by the writer stage."""
    uid = generate_uid()
    pending = [
        archive.store.prepare(encoded(uid, pixel=pixel), ExplicitVRLittleEndian)
        for pixel in (b"\x01" * 64, b"\x01" * 64, b"\x02" * 64)
    ]
    assert all(archive.index.keeps_inline(sum(len(c) for c in p.chunks)) for p in pending)
    futures = [archive.committer.submit(p) for p in pending]
    outcomes = [f.exception() or f.result().result for f in futures]
    assert sorted(map(str, outcomes[:2])) == [DUPLICATE, STORED]
    assert isinstance(outcomes[2], DuplicateInstanceError)
    held = archive.index.get_instance(uid)
    assert archive.blobs.read(held.blob_id).endswith(b"\x01" * 64)


def test_replace_never_moves_an_instance(archive):
    uid = generate_uid()
    archive.committer.duplicate_policy = "replace"
    assert archive.store.store(encoded(uid), ExplicitVRLittleEndian).result == STORED
    with pytest.raises(DuplicateInstanceError):
        archive.store.store(encoded(uid, series="1.2.3.5", pixel=b"\x03" * 64), ExplicitVRLittleEndian)
    assert archive.index.get_instance(uid).series_uid == "1.2.3.4"


def test_written_batches_share_one_index_transaction(archive):
    """Batches written while a transaction waited for the index's write lock join it, with a
    copy of one batch's instance in another judged as a duplicate of it."""
    committer = archive.committer
    uid, twin_uid = generate_uid(), generate_uid()
    batch_a = [archive.store.prepare(encoded(uid), ExplicitVRLittleEndian)]
    batch_b = [
        archive.store.prepare(encoded(uid), ExplicitVRLittleEndian),  # identical copy of batch A's
        archive.store.prepare(encoded(twin_uid), ExplicitVRLittleEndian),
        archive.store.prepare(encoded(twin_uid), ExplicitVRLittleEndian),  # its copy in the same batch
    ]
    transactions = count_transactions(archive)
    written_b = committer._write(batch_b)
    jobs = [(batch_a, committer._write(batch_a))]
    # Batch B was written while A waited for the write lock: it joins A's transaction.
    committer._index(jobs, lambda: jobs.append((batch_b, written_b)) or [p.record for p in written_b[0]])
    assert transactions == [3]  # A's instance, B's copy of it, B's first twin
    assert [p.future.result().result for p in batch_a + batch_b] == [STORED, DUPLICATE, STORED, DUPLICATE]
    # The copy's blob was written before the transaction found the first; the index keeps the first's.
    held = archive.index.get_instances([uid, twin_uid])
    assert batch_b[0].future.result().record.blob_id == held[uid].blob_id == batch_a[0].record.blob_id
    assert batch_b[0].record.blob_id != held[uid].blob_id


def test_inline_ids_need_the_index(tmp_path):
    store = LocalBlobStore(tmp_path / "blobs")
    with pytest.raises(FileNotFoundError):
        store.read(new_inline_id())
    assert store.local_path(new_inline_id()) is None
    store.close()
