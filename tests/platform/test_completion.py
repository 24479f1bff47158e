"""Study complete: the MPPS state table, the MPPS and stability rules, the IAN they queue,
and the outbox sender against a pynetdicom SCP playing the RIS."""
from __future__ import annotations

import threading

import pytest
from pydicom import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt

from pacsnode.config import NodeConfig, Remote
from pacsnode.dimse.outbound import OutboxSender, build_scu
from pacsnode.services import mpps
from pacsnode.services.archive import Archive
from pacsnode.services.completion import IAN_SOP_CLASS, CompletionWatcher
from pacsnode.services.hl7feed import Hl7Feed
from pacsnode.services.reconcile import ReconciliationService
from tests.peers import free_port
from tests.platform.dicomfiles import encoded, instance
from tests.ris import hl7msgs as m

RIS = Remote("RISNODE", "127.0.0.1", 9)
STUDY = "1.2.3.100"


@pytest.fixture
def archive(tmp_path):
    config = NodeConfig(data=tmp_path / "pacs", index_map_size=1 << 28, workers=1, ian=(RIS,), mpps_forward=(RIS,), study_stable_seconds=5)
    archive = Archive.open(config)
    yield archive
    archive.close()


def _step(accession: str = "ACC1", study: str = STUDY) -> Dataset:
    ds = Dataset()
    item = Dataset()
    item.AccessionNumber = accession
    item.StudyInstanceUID = study
    ds.ScheduledStepAttributesSequence = Sequence([item])
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    return ds


def _completed(images: list[Dataset]) -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = "COMPLETED"
    series = Dataset()
    series.SeriesInstanceUID = images[0].SeriesInstanceUID
    refs = []
    for image in images:
        ref = Dataset()
        ref.ReferencedSOPClassUID = image.SOPClassUID
        ref.ReferencedSOPInstanceUID = image.SOPInstanceUID
        refs.append(ref)
    series.ReferencedImageSequence = Sequence(refs)
    ds.PerformedSeriesSequence = Sequence([series])
    return ds


def _outbox(archive) -> list[dict]:
    with archive.tables.read() as tx:
        return [v for _, v in tx.items("outbox")]


def _store(archive, ds) -> None:
    archive.store.store(encoded(ds), ExplicitVRLittleEndian)


def test_mpps_state_table(archive):
    uid = generate_uid()
    handle = lambda request, ds, u=uid: mpps.handle(archive.tables, request, u, ds, "CT1", ())  # noqa: E731
    with pytest.raises(mpps.MppsError) as refused:
        handle("N-SET", _completed([instance()]))
    assert refused.value.dimse_status == mpps.NO_SUCH_OBJECT_INSTANCE
    bad = _step()
    bad.PerformedProcedureStepStatus = "COMPLETED"
    with pytest.raises(mpps.MppsError) as refused:
        handle("N-CREATE", bad)
    assert refused.value.dimse_status == mpps.INVALID_ATTRIBUTE_VALUE
    assert handle("N-CREATE", _step()) == mpps.IN_PROGRESS
    with pytest.raises(mpps.MppsError) as refused:
        handle("N-CREATE", _step())
    assert refused.value.dimse_status == mpps.DUPLICATE_SOP_INSTANCE
    no_series = Dataset()
    no_series.PerformedProcedureStepStatus = "COMPLETED"
    with pytest.raises(mpps.MppsError) as refused:
        handle("N-SET", no_series)
    assert refused.value.dimse_status == mpps.MISSING_ATTRIBUTE
    assert handle("N-SET", _completed([instance()])) == mpps.COMPLETED
    with pytest.raises(mpps.MppsError) as refused:
        handle("N-SET", _completed([instance()]))
    assert (refused.value.dimse_status, refused.value.error_id) == (mpps.PROCESSING_FAILURE, mpps.MAY_NO_LONGER_BE_UPDATED)


def test_completed_step_waits_for_every_referenced_instance(archive):
    watcher = CompletionWatcher(archive)
    images = [instance(study=STUDY, accession="ACC1") for _ in range(2)]
    uid = generate_uid()
    mpps.handle(archive.tables, "N-CREATE", uid, _step(), "CT1", (RIS,))
    _store(archive, images[0])
    mpps.handle(archive.tables, "N-SET", uid, _completed(images), "CT1", (RIS,))
    # One of two is held; the step's study waits even past the stability time.
    assert watcher.tick() == [] and watcher.tick(now=10**10) == []
    _store(archive, images[1])
    assert watcher.tick() == [STUDY]
    assert watcher.tick(now=10**10) == []  # announced once
    ops = [(o["op"], o["class"], o["to"]) for o in _outbox(archive)]
    assert ops == [("N-CREATE", mpps.MPPS_SOP_CLASS, "RISNODE=127.0.0.1:9"), ("N-SET", mpps.MPPS_SOP_CLASS, "RISNODE=127.0.0.1:9"),
                   ("N-CREATE", IAN_SOP_CLASS, "RISNODE=127.0.0.1:9")]
    ian = mpps.decoded(_outbox(archive)[-1]["ds"])
    assert ian.StudyInstanceUID == STUDY
    assert ian.ReferencedPerformedProcedureStepSequence[0].ReferencedSOPInstanceUID == uid
    assert ian.ReferencedRequestSequence[0].AccessionNumber == "ACC1"
    refs = ian.ReferencedSeriesSequence[0].ReferencedSOPSequence
    assert sorted(r.ReferencedSOPInstanceUID for r in refs) == sorted(i.SOPInstanceUID for i in images)
    assert {(r.InstanceAvailability, r.RetrieveAETitle) for r in refs} == {("ONLINE", "PACSNODE")}


def test_without_mpps_a_stable_study_is_complete(archive):
    watcher = CompletionWatcher(archive)
    _store(archive, instance(study="1.2.3.7"))
    assert watcher.tick() == []
    assert watcher.tick(now=10**10) == ["1.2.3.7"]
    # More instances later: announced again once stable.
    _store(archive, instance(study="1.2.3.7"))
    assert watcher.tick() == [] and watcher.tick(now=10**10) == ["1.2.3.7"]
    # An open step holds its study back.
    mpps.handle(archive.tables, "N-CREATE", generate_uid(), _step(study="1.2.3.8"), "CT1", ())
    _store(archive, instance(study="1.2.3.8"))
    assert watcher.tick(now=10**10) == []


def test_a_quarantined_study_is_announced_once_resolved(tmp_path):
    config = NodeConfig(data=tmp_path / "pacs", index_map_size=1 << 28, workers=1, ian=(RIS,), hl7_port=29999)
    archive = Archive.open(config)
    try:
        feed = Hl7Feed(archive)
        feed.receive(m.adt("A04", "P1").encode())
        feed.receive(m.orm("P1", "PO1", accession="ACC1", study_uid=STUDY).encode())
        _store(archive, instance(study=STUDY, accession="ACC1", patient_id="P2"))
        watcher = CompletionWatcher(archive)
        assert watcher.tick(now=10**10) == []
        (item,) = ReconciliationService(archive).items()
        ReconciliationService(archive).resolve(item["id"], "link", accession="ACC1")
        assert watcher.tick(now=10**10) == [STUDY]
    finally:
        archive.close()


def test_outbox_sends_in_order_and_retries(archive):
    got: list[tuple[str, str]] = []
    lock = threading.Lock()

    def on_create(event):
        with lock:
            got.append(("N-CREATE", str(event.request.AffectedSOPClassUID)))
        status = Dataset()
        status.Status = 0
        return status, None

    def on_set(event):
        with lock:
            got.append(("N-SET", str(event.request.RequestedSOPClassUID)))
        status = Dataset()
        status.Status = 0
        return status, None

    port = free_port()
    config = NodeConfig(data=archive.config.data, ian=(Remote("RISNODE", "127.0.0.1", port),))
    images = [instance(study=STUDY, accession="ACC1")]
    uid = generate_uid()
    remote = Remote("RISNODE", "127.0.0.1", port)
    mpps.handle(archive.tables, "N-CREATE", uid, _step(), "CT1", (remote,))
    mpps.handle(archive.tables, "N-SET", uid, _completed(images), "CT1", (remote,))
    sender = OutboxSender(archive, build_scu(config))
    assert sender.send_pending() == 0  # nobody listens yet: kept, retried later
    assert len(_outbox(archive)) == 2
    scp = AE(ae_title="RISNODE")
    scp.add_supported_context(mpps.MPPS_SOP_CLASS)
    scp.add_supported_context(IAN_SOP_CLASS)
    server = scp.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_N_CREATE, on_create), (evt.EVT_N_SET, on_set)])
    try:
        sender._retry.clear()
        assert sender.send_pending() == 2
    finally:
        server.shutdown()
    assert got == [("N-CREATE", mpps.MPPS_SOP_CLASS), ("N-SET", mpps.MPPS_SOP_CLASS)]
    assert _outbox(archive) == []
