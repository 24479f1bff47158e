"""Content digests: XXH3-128 over transfer syntax, NUL and dataset; records from before it
(a bare SHA-256) still pass storage commitment and still tell a copy from other content."""
from __future__ import annotations

import hashlib

import pytest
import xxhash
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from pacsnode.config import NodeConfig
from pacsnode.dicom.meta import build_file_meta
from pacsnode.errors import DuplicateInstanceError
from pacsnode.services.archive import Archive
from pacsnode.services.commitment import PROCESSING_FAILURE, verify
from pacsnode.services.store import DUPLICATE, REPLACED, STORED
from tests.platform.dicomfiles import SECONDARY_CAPTURE, encoded, instance

TS = ExplicitVRLittleEndian
# Where the bytes end up: in the index, in a segment, in a file of their own (spooled).
KINDS = {"inline": 16, "segment": 80_000, "spooled": 4096}


@pytest.fixture
def archive(tmp_path):
    archive = Archive.open(NodeConfig(data=tmp_path, index_map_size=1 << 28, workers=1))
    yield archive
    archive.close()


def _store(archive: Archive, uid: str, data: bytes, kind: str):
    if kind != "spooled":
        return archive.store.store(data, TS)
    path = archive.blobs.spool_path()
    path.write_bytes(build_file_meta(SECONDARY_CAPTURE, uid, TS) + data)
    return archive.committer.submit(archive.store.prepare(data, TS, spooled=path)).result()


def _data(uid: str, kind: str, fill: int = 3) -> bytes:
    return encoded(instance(uid, pixels=bytes([fill]) * KINDS[kind]))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(TS.encode() + b"\x00" + data).hexdigest()


@pytest.mark.parametrize("kind", KINDS)
def test_recorded_digest_is_xxh3_of_syntax_and_dataset(archive, kind):
    uid = generate_uid()
    data = _data(uid, kind)
    assert _store(archive, uid, data, kind).result == STORED
    expected = "xxh3-128:" + xxhash.xxh3_128(TS.encode() + b"\x00" + data).hexdigest()
    assert archive.index.get_instance(uid).digest == expected
    assert verify(archive.index, archive.blobs, [(SECONDARY_CAPTURE, uid)]).committed == [(SECONDARY_CAPTURE, uid)]


@pytest.mark.parametrize("kind", KINDS)
def test_records_with_sha256_still_verify_and_judge_duplicates(archive, kind):
    uid = generate_uid()
    data = _data(uid, kind)
    _store(archive, uid, data, kind)
    record = archive.index.get_instance(uid)
    record.digest = _sha256(data)  # as an archive written before XXH3 holds it
    archive.index.replace_instance(record)

    assert verify(archive.index, archive.blobs, [(SECONDARY_CAPTURE, uid)]).committed == [(SECONDARY_CAPTURE, uid)]
    assert _store(archive, uid, data, kind).result == DUPLICATE
    with pytest.raises(DuplicateInstanceError):
        _store(archive, uid, _data(uid, kind, fill=4), kind)
    assert archive.index.get_instance(uid).digest == _sha256(data)

    record.digest = _sha256(_data(uid, kind, fill=5))  # a record that no longer matches its bytes
    archive.index.replace_instance(record)
    assert verify(archive.index, archive.blobs, [(SECONDARY_CAPTURE, uid)]).failed == [
        (SECONDARY_CAPTURE, uid, PROCESSING_FAILURE)
    ]


def test_other_content_replaces_a_sha256_record_under_the_replace_policy(archive):
    uid = generate_uid()
    data = _data(uid, "segment")
    _store(archive, uid, data, "segment")
    record = archive.index.get_instance(uid)
    record.digest = _sha256(data)
    archive.index.replace_instance(record)
    archive.committer.duplicate_policy = "replace"
    changed = _data(uid, "segment", fill=9)
    assert _store(archive, uid, changed, "segment").result == REPLACED
    assert archive.index.get_instance(uid).digest.startswith("xxh3-128:")
    assert verify(archive.index, archive.blobs, [(SECONDARY_CAPTURE, uid)]).committed == [(SECONDARY_CAPTURE, uid)]
