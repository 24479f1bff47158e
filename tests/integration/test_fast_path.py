"""The asyncio fast path against pynetdicom's own acceptor (`--no-fast-path`): the same
instances stored byte for byte, the same C-FIND answers; and its handling of bad peers."""
from __future__ import annotations

import os
import socket
import struct
import subprocess
import time
from io import BytesIO

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import build_context
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification

from tests.integration.helpers import (
    association,
    blob_snapshot,
    describe,
    find_all,
    getscu,
    identifier,
    movescu,
    pynetdicom_store,
    received_by_uid,
    run,
    split_part10,
    stored_archive,
)
from tests.peers import dcmtk

pytestmark = pytest.mark.integration

SC = "1.2.840.10008.5.1.4.1.1.7"


@pytest.fixture(scope="module")
def twins(module_node_factory, generated, dcmtk_encoded):
    """Two nodes loaded with the same files: one with the fast path, one pynetdicom only."""
    files = [describe(p) for p in generated.paths] + dcmtk_encoded
    fast = module_node_factory()
    slow = module_node_factory(extra=["--no-fast-path"])
    for node in (fast, slow):
        outcome = pynetdicom_store(node, files)
        assert all(v == "Success" for v in outcome.values()), outcome
    return fast, slow, files


QUERIES = [
    identifier("STUDY", PatientName="*", StudyInstanceUID="", StudyDate="", ModalitiesInStudy="", NumberOfStudyRelatedInstances=""),
    identifier("SERIES", StudyInstanceUID="", SeriesInstanceUID="", Modality="", NumberOfSeriesRelatedInstances=""),
    identifier("IMAGE", SOPInstanceUID="", SOPClassUID="", InstanceNumber="", PatientID=""),
    identifier("FOO", PatientID=""),
]


def test_find_answers_are_the_same(twins):
    fast, slow, _ = twins
    answers = []
    for node in (fast, slow):
        with association(node) as assoc:
            answers.append([find_all(assoc, q) for q in QUERIES])
    (fast_answers, slow_answers) = answers
    for (status_f, found_f), (status_s, found_s) in zip(fast_answers, slow_answers):
        assert status_f == status_s
        key = lambda ds: str(ds.get("SOPInstanceUID") or ds.get("SeriesInstanceUID") or ds.get("StudyInstanceUID"))
        assert sorted(map(str, found_f), key=str) == sorted(map(str, found_s), key=str)
        assert len(found_f) == len({key(d) for d in found_f})
    assert fast_answers[0][1], "the study query found nothing"
    assert fast_answers[3][0] == 0xA900


def test_stored_bytes_are_the_same(twins):
    fast, slow, files = twins
    stored = []
    for node in (fast, slow):
        node.stop()
        with stored_archive(node) as archive:
            stored.append({f.sop_instance_uid: archive.blobs.read(archive.index.get_instance(f.sop_instance_uid).blob_id) for f in files})
        node.start()
    assert stored[0] == stored[1]
    for f in files:
        assert split_part10(stored[0][f.sop_instance_uid])[1] == split_part10(f.path)[1], f.name


def _multiframe(path, frames: int, side: int = 1024) -> str:
    """A Multi-frame Grayscale Word SC file; its SOP Instance UID."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7.3"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.Modality = "LARGE", "Large^Multiframe", "OT"
    ds.Rows = ds.Columns = side
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation, ds.SamplesPerPixel = 15, 0, 1
    ds.PhotometricInterpretation, ds.NumberOfFrames = "MONOCHROME2", frames
    ds.PixelData = np.random.default_rng(1).integers(0, 65535, (frames, side, side), dtype=np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return ds.SOPInstanceUID


def test_large_instance_is_spooled_to_disk(node_factory, tmp_path):
    node = node_factory(extra=["--workers", "1"])
    path = tmp_path / "large.dcm"
    _multiframe(path, frames=24)  # 48 MiB: above the spool threshold
    f = describe(path)
    assert pynetdicom_store(node, [f]) == {path: "Success"}
    node.stop()
    assert list((node.data / "blobs" / "incoming").iterdir()) == []
    with stored_archive(node) as archive:
        record = archive.index.get_instance(f.sop_instance_uid)
        assert archive.blobs.local_path(record.blob_id) is not None, "a large instance gets a file of its own"
        assert archive.check(f, split_part10(path)[1]) == []


def _peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024


def _worker(node) -> int:
    """The process serving associations of a node started with --workers 1 (its own, or the
    one child it forked)."""
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == node.proc.pid:
                        children.append(int(entry))
            except OSError:
                continue
    assert len(children) <= 1, children
    return children[0] if children else node.proc.pid


def test_large_instance_is_sent_from_its_file(node_factory, storescp_factory, tmp_path):
    """C-MOVE and C-GET of a 48 MiB instance: it arrives byte for byte, read from its file a
    few MB at a time (the sending worker's peak RSS grows by far less than the instance)."""
    destination = storescp_factory(["+B"], ae_title="DEST")
    node = node_factory(extra=["--workers", "1"], remotes={"DEST": destination.port})
    path = tmp_path / "large.dcm"
    _multiframe(path, frames=24)
    f = describe(path)
    assert pynetdicom_store(node, [f]) == {path: "Success"}
    worker = _worker(node)
    before = _peak_rss_mb(worker)
    moved = movescu(node, "DEST", {"StudyInstanceUID": f.study_uid})
    got = getscu(node, {"StudyInstanceUID": f.study_uid}, "STUDY", tmp_path / "got")
    grew = _peak_rss_mb(worker) - before
    dataset = split_part10(path)[1]
    for result, folder in ((moved, destination.folder), (got, tmp_path / "got")):
        assert result.final.get("status") == 0, result.output[-2000:]
        assert split_part10(received_by_uid(folder)[f.sop_instance_uid])[1] == dataset
    assert grew < 24, f"the worker's peak RSS grew by {grew:.0f} MB sending a 48 MB instance"


def test_a_sender_with_nagle_on_is_acknowledged_at_once(node_factory, tmp_path):
    """storescu as installed (no TCP_NODELAY) holds a PDU's next segment until the one before
    is acknowledged: unless the node ACKs every read at once, each instance waits for the
    kernel's delayed ACK (~40 ms: 50 instances take ~2 s instead of ~0.1 s)."""
    node = node_factory(extra=["--workers", "1"])
    paths = [tmp_path / f"{n}.dcm" for n in range(50)]
    uids = [_multiframe(path, frames=1, side=16) for path in paths]
    env = {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}
    started = time.monotonic()
    proc = subprocess.run(
        [dcmtk("storescu"), "-aec", node.ae_title, "127.0.0.1", str(node.port), *map(str, paths)],
        env=env, capture_output=True, text=True, timeout=60,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    node.stop()
    with stored_archive(node) as archive:
        assert len(archive.index.get_instances(uids)) == len(uids)
    assert elapsed < 1.0, f"{elapsed:.2f} s for {len(uids)} instances: delayed ACKs"


# -- bad peers ---------------------------------------------------------------------------


def _associate_rq(called: str = "PACSNODE") -> bytes:
    p = A_ASSOCIATE()
    p.application_context_name = "1.2.840.10008.3.1.1.1"
    p.calling_ae_title, p.called_ae_title = "RAWPEER", called
    cx = build_context(SC, [ExplicitVRLittleEndian])
    cx.context_id = 1
    p.presentation_context_definition_list = [cx]
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = 16384
    p.user_information = [max_length]
    rq = A_ASSOCIATE_RQ()
    rq.from_primitive(p)
    return rq.encode()


def _read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    head = b""
    while len(head) < 6:
        chunk = sock.recv(6 - len(head))
        if not chunk:
            return -1, b""
        head += chunk
    pdu_type, length = struct.unpack(">BxI", head)
    body = b""
    while len(body) < length:
        body += sock.recv(length - len(body))
    return pdu_type, body


def _raw_association(node) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", node.port), timeout=10)
    sock.sendall(_associate_rq(node.ae_title))
    assert _read_pdu(sock)[0] == 0x02  # A-ASSOCIATE-AC
    return sock


def _pdv(context_id: int, control: int, payload: bytes) -> bytes:
    item = struct.pack(">IBB", len(payload) + 2, context_id, control) + payload
    return struct.pack(">BxI", 0x04, len(item)) + item


@pytest.mark.parametrize(
    "garbage,reason",
    [
        (_pdv(99, 0x03, b"\x00" * 8), 0x06),  # P-DATA on a context that was never proposed
        (struct.pack(">BxI", 0x09, 4) + b"\x00" * 4, 0x01),  # no such PDU type
        (struct.pack(">BxI", 0x04, 3) + b"\x00" * 3, 0x06),  # a PDV item cut short
        (_pdv(1, 0x03, b"\x08\x00\x00\x00garbage!"), 0x06),  # a command set that does not parse
        (_pdv(1, 0x02, b"\x00" * 8), 0x02),  # a dataset with no command before it
    ],
)
def test_protocol_errors_abort_and_the_node_carries_on(node_factory, garbage, reason):
    node = node_factory()
    with _raw_association(node) as sock:
        sock.sendall(garbage)
        pdu_type, body = _read_pdu(sock)
        assert pdu_type == 0x07 and body[2] == 0x02 and body[3] == reason  # A-ABORT from the provider
    assert run([dcmtk("echoscu"), "-aec", node.ae_title, "127.0.0.1", str(node.port)]).returncode == 0
    assert "aborting" in node.wait_log("protocol error")


def test_abort_in_the_middle_of_a_dataset_stores_nothing(node_factory, generated):
    node = node_factory()
    f = describe(generated.paths[0])
    _, dataset = split_part10(f.path)
    before = blob_snapshot(node)
    req = C_STORE()
    req.MessageID, req.Priority = 1, 2
    req.AffectedSOPClassUID, req.AffectedSOPInstanceUID = f.sop_class_uid, f.sop_instance_uid
    req.DataSet = BytesIO(b"")
    message = C_STORE_RQ()
    message.primitive_to_message(req)
    command = encode(message.command_set, True, True)
    # A C-STORE-RQ whose dataset never completes: only its first half arrives.
    with _raw_association(node) as sock:
        sock.sendall(_pdv(1, 0x03, command) + _pdv(1, 0x00, dataset[: len(dataset) // 2]))
        sock.sendall(struct.pack(">BxI", 0x07, 4) + b"\x00\x00\x00\x00")  # A-ABORT
    node.wait_log("aborted by peer")
    with association(node) as assoc:
        status, found = find_all(assoc, identifier("IMAGE", SOPInstanceUID=f.sop_instance_uid))
    assert status == 0 and found == []
    assert blob_snapshot(node) == before
