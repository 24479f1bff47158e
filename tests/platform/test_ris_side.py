"""The RIS's half of the handshake, over its services and a temporary LMDB: what it sends
the PACS (OMI^O23, ADT^A08/A40 through the durable queue) and what an Instance Availability
Notification does to an order under each completion policy."""
from __future__ import annotations

import asyncio
from datetime import datetime

import pytest
from pydicom import Dataset
from pydicom.sequence import Sequence

from pacsnode.services.hl7feed import patient_identity
from risnode.config import build
from risnode.hl7.message import parse, read_ack
from risnode.services import outbound
from risnode.services.ris import Ris
from risnode.store import Store, Writer
from tests.ris import hl7msgs as m

NOW = datetime(2024, 5, 1, 9, 0)


def _ris(tmp_path, **values) -> Ris:
    store = Store(tmp_path / "ris", map_size=64 * 1024**2)
    return Ris(build({"station": ["DX=DX1"], "pacs_hl7": "127.0.0.1:9", **values}), store, Writer(store), clock=lambda: NOW)


@pytest.fixture
def ris(tmp_path):
    ris = _ris(tmp_path, completion_policy="pacs")
    yield ris
    ris.writer.close()
    ris.store.close()


def send(ris: Ris, text: str) -> str:
    return read_ack(asyncio.run(ris.receive_hl7(text.encode())))[0]


def _to_pacs(ris: Ris) -> list:
    return [msg for msg in ris.outbound() if msg.role == outbound.PACS]


def test_orders_and_demographics_are_queued_for_the_pacs(ris):
    woken: list[str] = []
    ris.notify = woken.append
    assert send(ris, m.adt("A04", "P1", name="DOE^JOHN")) == "AA"
    assert send(ris, m.orm("P1", "PO1", modality="DX", code="71046", meaning="XR CHEST 2 VIEWS")) == "AA"
    assert send(ris, m.orm("P1", "PO1", control="CA")) == "AA"
    assert send(ris, m.adt("A04", "P2")) == "AA"
    assert send(ris, m.merge("P1", "P2")) == "AA"
    assert woken.count(outbound.PACS) == 5  # the worker is woken after each commit
    kinds = [(msg.kind, msg.accession != "") for msg in _to_pacs(ris)]
    assert kinds == [("ADT^A08", False), ("OMI^O23", True), ("OMI^O23", True), ("ADT^A08", False), ("ADT^A40", False)]
    order, _ = ris.orders()[0]
    new = parse(_to_pacs(ris)[1].payload)
    ipc = new.first("IPC")
    assert (new.first("ORC").get(1), ipc.get(1), ipc.get(3), ipc.get(9)) == ("NW", order.accession, order.study_uid, "DX1")
    assert patient_identity(new.first("PID"))["PatientName"] == "DOE^JOHN"
    assert parse(_to_pacs(ris)[2].payload).first("ORC").get(1) == "CA"
    merge = parse(_to_pacs(ris)[4].payload)
    assert (merge.first("PID").get(3), merge.first("MRG").get(1)) == ("P1", "P2")


def test_nothing_is_queued_without_a_pacs(tmp_path):
    ris = _ris(tmp_path, pacs_hl7="")
    try:
        assert send(ris, m.adt("A04", "P1")) == "AA"
        assert _to_pacs(ris) == []
    finally:
        ris.writer.close()
        ris.store.close()


def _ian(accession: str, study_uid: str, mpps_uid: str = "") -> Dataset:
    ds = Dataset()
    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.3"
    ref.ReferencedSOPInstanceUID = mpps_uid
    ds.ReferencedPerformedProcedureStepSequence = Sequence([ref] if mpps_uid else [])
    ds.StudyInstanceUID = study_uid
    request = Dataset()
    request.AccessionNumber = accession
    request.StudyInstanceUID = study_uid
    ds.ReferencedRequestSequence = Sequence([request])
    series = Dataset()
    series.SeriesInstanceUID = "1.2.3.4.5"
    image = Dataset()
    image.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    image.ReferencedSOPInstanceUID = "1.2.3.4.5.6"
    image.InstanceAvailability = "ONLINE"
    image.RetrieveAETitle = "PACSNODE"
    series.ReferencedSOPSequence = Sequence([image])
    ds.ReferencedSeriesSequence = Sequence([series])
    return ds


def test_ian_completes_the_exam_under_the_pacs_policy(ris):
    assert send(ris, m.adt("A04", "P1")) == "AA"
    assert send(ris, m.orm("P1", "PO1", modality="DX")) == "AA"
    assert send(ris, m.orm("P1", "PO2", modality="DX")) == "AA"
    (a, _), (b, _) = ris.orders()
    # No MPPS at all (the stability rule at the PACS): scheduled -> in_progress -> exam_complete.
    assert ris.availability("1.2.3.901", _ian(a.accession, a.study_uid), "PACSNODE") == [a.accession]
    order, _ = ris.order(a.accession)
    assert order.status == "exam_complete"
    assert [e["event"] for e in order.timeline][-2:] == ["images arrived", "study complete"]
    assert order.performed["available"]["instances"] == 1
    # Found by Study Instance UID when the accession number is unknown to us.
    assert ris.availability("1.2.3.902", _ian("UNKNOWN", b.study_uid), "PACSNODE") == [b.accession]
    # A repeated notification of an exam already complete is only recorded.
    ris.availability("1.2.3.903", _ian(a.accession, a.study_uid), "PACSNODE")
    order, _ = ris.order(a.accession)
    assert (order.status, order.timeline[-1]["event"]) == ("exam_complete", "images available")


def test_ian_is_only_recorded_under_the_standalone_policy(tmp_path):
    ris = _ris(tmp_path)
    try:
        assert send(ris, m.adt("A04", "P1")) == "AA"
        assert send(ris, m.orm("P1", "PO1", modality="DX")) == "AA"
        (a, _), = ris.orders()
        ris.availability("1.2.3.904", _ian(a.accession, a.study_uid), "PACSNODE")
        order, _ = ris.order(a.accession)
        assert (order.status, order.timeline[-1]["event"]) == ("scheduled", "images available")
    finally:
        ris.writer.close()
        ris.store.close()
