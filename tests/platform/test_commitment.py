"""Storage commitment: each instance is read back and checked against the checksum recorded
when it was stored; the N-EVENT-REPORT (same association or a new one) says what is held."""
from __future__ import annotations

import threading

import pytest
from pydicom import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt

from pacsnode.config import NodeConfig
from pacsnode.dimse.commitment import STORAGE_COMMITMENT_INSTANCE, STORAGE_COMMITMENT_PUSH, event_information
from pacsnode.services.archive import Archive
from pacsnode.services.commitment import CLASS_INSTANCE_CONFLICT, NO_SUCH_OBJECT_INSTANCE, PROCESSING_FAILURE, verify
from pacsnode.storage.inline import is_inline
from pacsnode.storage.segments import parse_segment_id
from tests.platform.dicomfiles import SECONDARY_CAPTURE, encoded, instance

CT = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture
def archive(tmp_path):
    archive = Archive.open(NodeConfig(data=tmp_path / "pacs", index_map_size=1 << 28, workers=1))
    yield archive
    archive.close()


def _corrupt(archive: Archive, sop_uid: str) -> None:
    """Flip the last byte of a stored blob in place (what a failing disk might do)."""
    record = archive.index.get_instance(sop_uid)
    if is_inline(record.blob_id):  # a small instance: its bytes live in the index
        key, table = record.blob_id.encode(), archive.index.db["blobs"]
        with archive.index.env.begin(write=True) as txn:
            raw = bytearray(txn.get(key, db=table))
            raw[-1] ^= 0xFF
            txn.put(key, bytes(raw), db=table)
        return
    name, offset, length = parse_segment_id(record.blob_id)
    path = archive.blobs.segments / f"{name}.seg"
    with open(path, "r+b") as fh:
        fh.seek(offset + length - 1)
        byte = fh.read(1)
        fh.seek(offset + length - 1)
        fh.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.parametrize("pixel_bytes", [16, 80_000], ids=["inline", "segment"])
def test_verify_commits_intact_instances_only(archive, pixel_bytes):
    uids = [generate_uid() for _ in range(4)]
    for uid in uids:
        archive.store.store(encoded(instance(uid, pixels=b"\x03" * pixel_bytes)), ExplicitVRLittleEndian)
    _corrupt(archive, uids[3])
    unknown = generate_uid()
    refs = [(SECONDARY_CAPTURE, u) for u in uids[:2]] + [(CT, uids[2]), (SECONDARY_CAPTURE, uids[3]), (SECONDARY_CAPTURE, unknown)]
    result = verify(archive.index, archive.blobs, refs)
    assert result.committed == [(SECONDARY_CAPTURE, uids[0]), (SECONDARY_CAPTURE, uids[1])]
    assert result.failed == [
        (CT, uids[2], CLASS_INSTANCE_CONFLICT),
        (SECONDARY_CAPTURE, uids[3], PROCESSING_FAILURE),
        (SECONDARY_CAPTURE, unknown, NO_SUCH_OBJECT_INSTANCE),
    ]
    event_type, info = event_information("1.2.3.4", result, "PACSNODE")
    assert event_type == 2
    assert info.TransactionUID == "1.2.3.4" and info.RetrieveAETitle == "PACSNODE"
    assert [i.ReferencedSOPInstanceUID for i in info.ReferencedSOPSequence] == uids[:2]
    assert [i.FailureReason for i in info.FailedSOPSequence] == [0x0119, 0x0110, 0x0112]


def test_verify_reads_large_instances_from_their_files(archive, monkeypatch):

    uid = generate_uid()
    data = encoded(instance(uid, pixels=b"\x07" * 4096))
    # A spooled (large) instance is adopted as a file of its own.
    path = archive.blobs.spool_path()
    from pacsnode.dicom.meta import build_file_meta

    path.write_bytes(build_file_meta(SECONDARY_CAPTURE, uid, ExplicitVRLittleEndian) + data)
    pending = archive.store.prepare(data, ExplicitVRLittleEndian, spooled=path, digest=None)
    archive.committer.submit(pending).result()
    record = archive.index.get_instance(uid)
    assert archive.blobs.local_path(record.blob_id) is not None
    assert verify(archive.index, archive.blobs, [(SECONDARY_CAPTURE, uid)]).committed == [(SECONDARY_CAPTURE, uid)]
    with open(archive.blobs.local_path(record.blob_id), "r+b") as fh:
        fh.seek(-1, 2)
        fh.write(b"\x00")
    assert verify(archive.index, archive.blobs, [(SECONDARY_CAPTURE, uid)]).failed == [(SECONDARY_CAPTURE, uid, PROCESSING_FAILURE)]


# -- against `pacsnode serve`, pynetdicom as the modality --------------------------------------------------


def _request(uids: list[str]) -> tuple[str, Dataset]:
    ds = Dataset()
    ds.TransactionUID = generate_uid()
    items = []
    for uid in uids:
        item = Dataset()
        item.ReferencedSOPClassUID = SECONDARY_CAPTURE
        item.ReferencedSOPInstanceUID = uid
        items.append(item)
    ds.ReferencedSOPSequence = Sequence(items)
    return ds.TransactionUID, ds


class Reports:
    """N-EVENT-REPORTs a modality receives, on its association or on its own SCP."""

    def __init__(self) -> None:
        self.got: list[tuple[int, Dataset, str]] = []
        self.arrived = threading.Event()

    def handler(self, event: evt.Event):
        self.got.append((event.event_type, event.event_information, "requestor" if event.assoc.is_requestor else "acceptor"))
        self.arrived.set()
        status = Dataset()
        status.Status = 0
        return status, None


@pytest.mark.integration
def test_modality_gets_the_report_on_the_same_association(node_factory):
    node = node_factory(extra=["--workers", "1"])
    reports = Reports()
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(SECONDARY_CAPTURE, ExplicitVRLittleEndian)
    ae.add_requested_context(STORAGE_COMMITMENT_PUSH)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="PACSNODE", evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handler)])
    assert assoc.is_established
    try:
        uids = [generate_uid() for _ in range(3)]
        for uid in uids:
            assert assoc.send_c_store(instance(uid)).Status == 0
        missing = generate_uid()
        transaction, request = _request(uids + [missing])
        status, _ = assoc.send_n_action(request, 1, STORAGE_COMMITMENT_PUSH, STORAGE_COMMITMENT_INSTANCE)
        assert status.Status == 0
        assert reports.arrived.wait(20), "no N-EVENT-REPORT"
    finally:
        assoc.release()
    event_type, info, side = reports.got[0]
    assert (event_type, side) == (2, "requestor")
    assert info.TransactionUID == transaction
    assert sorted(i.ReferencedSOPInstanceUID for i in info.ReferencedSOPSequence) == sorted(uids)
    assert [(i.ReferencedSOPInstanceUID, i.FailureReason) for i in info.FailedSOPSequence] == [(missing, 0x0112)]


@pytest.mark.integration
def test_report_on_a_new_association_when_the_modality_has_left(node_factory):
    from tests.peers import free_port

    reports = Reports()
    port = free_port()
    scp = AE(ae_title="MODALITY")
    # We accept the PACS proposing itself as the Storage Commitment SCP (role selection).
    scp.add_supported_context(STORAGE_COMMITMENT_PUSH, scu_role=False, scp_role=True)
    server = scp.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handler)])
    try:
        node = node_factory(remotes={"MODALITY": port}, extra=["--workers", "1"])
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(SECONDARY_CAPTURE, ExplicitVRLittleEndian)
        ae.add_requested_context(STORAGE_COMMITMENT_PUSH)
        assoc = ae.associate("127.0.0.1", node.port, ae_title="PACSNODE")
        assert assoc.is_established
        uids = [generate_uid() for _ in range(2)]
        for uid in uids:
            assert assoc.send_c_store(instance(uid)).Status == 0
        transaction, request = _request(uids)
        status, _ = assoc.send_n_action(request, 1, STORAGE_COMMITMENT_PUSH, STORAGE_COMMITMENT_INSTANCE)
        assert status.Status == 0
        assoc.release()  # at once: the report must come on an association of the PACS's own
        assert reports.arrived.wait(30), "no N-EVENT-REPORT on a new association"
    finally:
        server.shutdown()
    event_type, info, side = reports.got[0]
    assert (event_type, side) == (1, "acceptor")
    assert info.TransactionUID == transaction
    assert sorted(i.ReferencedSOPInstanceUID for i in info.ReferencedSOPSequence) == sorted(uids)
    assert "FailedSOPSequence" not in info
