"""The store service and LMDB index on the real corpus, in-process (no network)."""
from __future__ import annotations

import os
import threading
import warnings
from io import BytesIO

import pydicom
import pytest
from pydicom.multival import MultiValue

from pacsnode._native import header
from pacsnode.dicom.attributes import INDEXED
from pacsnode.dicom.matching import build_matcher
from pacsnode.index import LmdbIndex
from pacsnode.errors import DuplicateInstanceError, MalformedDatasetError, MissingAttributeError
from pacsnode.config import NodeConfig
from pacsnode.services.store import DUPLICATE, REPLACED, STORED, StoreService
from pacsnode.services.archive import Archive
from tests.corpus import BAD, corpus_files, part10, part10_files


CORPUS = part10_files()



def _expected(ds: pydicom.Dataset, keyword: str):
    elem = ds[keyword]
    value = elem.value
    if value is None or value == "" or value == b"":
        return None
    if isinstance(value, MultiValue):
        return "\\".join(str(v) for v in value) if elem.VR not in ("US", "SS", "UL", "SL", "FL", "FD") else list(value)
    if elem.VR in ("US", "SS", "UL", "SL"):
        return int(value)
    return str(value).strip(" \x00") or None


def _store_first(service: StoreService, data: bytes, ts: str) -> bool:
    """Store unless the SOP Instance UID is already held (in another syntax)."""
    try:
        return service.store(data, ts).result == STORED
    except DuplicateInstanceError:
        return False


@pytest.fixture
def archive(tmp_path):
    archive = Archive.open(NodeConfig(data=tmp_path, index_map_size=1 << 30))
    yield archive
    archive.close()


@pytest.fixture
def service(archive):
    return archive.store


def _bytes_on_disk(archive) -> int:
    return sum(f.stat().st_size for f in archive.blobs.root.rglob("*") if f.is_file())


def test_corpus_is_big_enough():
    assert len(CORPUS) > 100


def test_store_indexes_what_pydicom_reads(archive, service):
    mismatches = []
    seen: set[str] = set()
    for path in CORPUS:
        ds, ts, data = part10(path)
        if str(ds.SOPInstanceUID) in seen:
            # The corpus holds some instances twice, or in several syntaxes: the first one stays.
            assert not _store_first(service, data, ts)
            continue
        seen.add(str(ds.SOPInstanceUID))
        outcome = service.store(data, ts, str(ds.SOPClassUID), str(ds.SOPInstanceUID), "TESTSCU")
        assert outcome.result == STORED, path
        stored = archive.blobs.read(outcome.record.blob_id)
        assert stored.endswith(data), f"{path}: stored bytes differ from received"
        meta = pydicom.dcmread(BytesIO(stored), stop_before_pixels=True).file_meta
        assert meta.TransferSyntaxUID == ts and meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        for kw in INDEXED:
            if kw in ds and kw not in ("SOPInstanceUID",):
                want = _expected(ds, kw)
                got = outcome.record.attrs.get(kw)
                if got != want:
                    mismatches.append((os.path.basename(path), kw, want, got))
    assert not mismatches, mismatches[:20]


def test_counts_and_computed_keys(archive, service):
    by_study: dict[str, set] = {}
    series_of: dict[str, set] = {}
    for path in CORPUS:
        ds, ts, data = part10(path)
        if _store_first(service, data, ts):
            by_study.setdefault(str(ds.StudyInstanceUID), set()).add(str(ds.SOPInstanceUID))
            series_of.setdefault(str(ds.StudyInstanceUID), set()).add(str(ds.SeriesInstanceUID))
    views = list(archive.index.find("STUDY", {}))
    assert {v["StudyInstanceUID"] for v in views} == set(by_study)
    for v in views:
        uid = v["StudyInstanceUID"]
        assert v["NumberOfStudyRelatedInstances"] == len(by_study[uid])
        assert v["NumberOfStudyRelatedSeries"] == len(series_of[uid])
        listed = {r.sop_instance_uid for r in archive.index.instances_under("STUDY", uid)}
        assert listed == by_study[uid]


def test_keyed_lookups_agree_with_full_scan(archive, service):
    for path in CORPUS:
        ds, ts, data = part10(path)
        _store_first(service, data, ts)
    everything = list(archive.index.find("STUDY", {}))
    for keyword, vr in (("PatientID", "LO"), ("AccessionNumber", "SH"), ("StudyDate", "DA"), ("PatientName", "PN")):
        for view in everything:
            value = view.get(keyword)
            if not value:
                continue
            matcher = build_matcher(keyword, vr, value)
            keyed = {v["StudyInstanceUID"] for v in archive.index.find("STUDY", {keyword: matcher})}
            scanned = {v["StudyInstanceUID"] for v in everything if matcher(v.get(keyword))}
            assert keyed == scanned, (keyword, value)


def test_duplicates(archive, service):
    ds, ts, data = part10(next(p for p in CORPUS if p.endswith("CT_small.dcm")))
    assert service.store(data, ts).result == STORED
    size = _bytes_on_disk(archive)
    assert service.store(data, ts).result == DUPLICATE
    changed = bytearray(data)
    changed[-1] ^= 0xFF  # last pixel byte
    with pytest.raises(DuplicateInstanceError):
        service.store(bytes(changed), ts)
    assert _bytes_on_disk(archive) == size
    assert archive.blobs.read(archive.index.get_instance(str(ds.SOPInstanceUID)).blob_id).endswith(data)
    archive.committer.duplicate_policy = "replace"
    assert service.store(bytes(changed), ts).result == REPLACED
    record = archive.index.get_instance(str(ds.SOPInstanceUID))
    assert archive.blobs.read(record.blob_id).endswith(bytes(changed))
    assert next(archive.index.find("STUDY", {}))["NumberOfStudyRelatedInstances"] == 1


def test_truncated_and_incomplete_datasets_are_refused(archive, service):
    ds, ts, data = part10(next(p for p in CORPUS if p.endswith("CT_small.dcm")))
    for cut in (7, 100, len(data) // 2, len(data) - 3):
        with pytest.raises(MalformedDatasetError):
            service.store(data[:cut], ts)
    del ds.SeriesInstanceUID
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    write_dataset(buf, ds)
    with pytest.raises(MissingAttributeError):
        service.store(buf.getvalue(), ts)
    assert _bytes_on_disk(archive) == 0
    assert list(archive.index.find("STUDY", {})) == []


@pytest.mark.parametrize("name", BAD)
def test_bad_files_are_refused(archive, service, name):
    path = next(p for p in corpus_files() if os.path.basename(p) == name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta
    raw = open(path, "rb").read()
    _, offset = header.read_file_meta(raw)
    with pytest.raises(MalformedDatasetError):
        service.store(raw[offset:], str(meta.TransferSyntaxUID))
    assert _bytes_on_disk(archive) == 0


def test_index_writes_flush_after_releasing_the_write_lock(tmp_path):
    """A write is durable when write() returns (its final flush has run), and that flush runs
    without the write lock, so another worker's transaction commits meanwhile."""
    index = LmdbIndex(tmp_path / "index", map_size=1 << 24)
    events = []

    def flush():
        committed = threading.Event()

        def commit_elsewhere():
            with index.write() as txn:
                txn.put(b"other", b"1", db=index.db["blobs"])
            committed.set()

        events.append("flush")
        if len(events) == 1:  # the first write's flush: another writer must get through now
            other = threading.Thread(target=commit_elsewhere)
            other.start()
            assert committed.wait(10), "the write lock was still held during the flush"
            other.join()
        real_flush()

    real_flush = index._flush
    index._flush = flush
    with index.write() as txn:
        txn.put(b"first", b"1", db=index.db["blobs"])
    assert events == ["flush", "flush"]
    with index.env.begin() as txn:
        assert txn.get(b"first", db=index.db["blobs"]) == b"1" and txn.get(b"other", db=index.db["blobs"]) == b"1"
    index.close()
