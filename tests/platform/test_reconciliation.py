"""Identity reconciliation over a real archive in-process: the HL7 feed fills the orders, the
store path checks each instance against them, and the view's resolutions (and ADT A08/A40)
change the stored headers and the index together, with an audit trail."""
from __future__ import annotations

import io

import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import ExplicitVRLittleEndian

from pacsnode.config import NodeConfig
from pacsnode.errors import AlreadyResolvedError, UnknownItemError
from pacsnode.services.archive import Archive
from pacsnode.services.commitment import verify
from pacsnode.services.hl7feed import Hl7Feed
from pacsnode.services.identity import compare, Expected
from pacsnode.services.reconcile import ReconciliationService
from pacsnode.services.store import DUPLICATE, STORED
from tests.platform.dicomfiles import SECONDARY_CAPTURE, encoded, instance
from tests.ris import hl7msgs as m

ACC = "ACC0001"
STUDY = "1.2.826.0.1.3680043.10.1471.2.777"


def _archive(tmp_path, policy: str) -> Archive:
    return Archive.open(NodeConfig(data=tmp_path / "pacs", index_map_size=1 << 28, workers=1, hl7_port=29999, identity_policy=policy))


@pytest.fixture(params=["quarantine"])
def archive(tmp_path, request):
    archive = _archive(tmp_path, request.param)
    yield archive
    archive.close()


@pytest.fixture
def coerce_archive(tmp_path):
    archive = _archive(tmp_path, "coerce")
    yield archive
    archive.close()


def _ack(feed: Hl7Feed, message: str) -> str:
    ack = feed.receive(message.encode()).decode()
    return next(s for s in ack.split("\r") if s.startswith("MSA")).split("|")[1]


def _order(archive: Archive, patient_id: str = "P1", name: str = "DOE^JOHN", accession: str = ACC, study: str = STUDY) -> Hl7Feed:
    feed = Hl7Feed(archive)
    assert _ack(feed, m.adt("A04", patient_id, name=name)) == "AA"
    assert _ack(feed, m.orm(patient_id, f"PO-{accession}", accession=accession, study_uid=study)) == "AA"
    return feed


def _store(archive: Archive, **kw) -> tuple[str, str]:
    ds = instance(**kw)
    return archive.store.store(encoded(ds), ExplicitVRLittleEndian).result, ds.SOPInstanceUID


def _find(archive: Archive, level: str = "STUDY", **keys) -> list[Dataset]:
    q = Dataset()
    q.QueryRetrieveLevel = level
    q.PatientID = ""
    q.PatientName = ""
    q.StudyInstanceUID = ""
    for k, v in keys.items():
        setattr(q, k, v)
    return list(archive.query.find(q, "PATIENT" if level == "PATIENT" else "STUDY"))


def _stored(archive: Archive, sop_uid: str) -> Dataset:
    record = archive.index.get_instance(sop_uid, include_quarantined=True)
    return dcmread(io.BytesIO(archive.blobs.read(record.blob_id)))


def test_compare_separates_conflicts_from_missing_values():
    expected = Expected(ACC, STUDY, {"PatientID": "P1", "PatientName": "DOE^JOHN", "PatientBirthDate": "19700101", "PatientSex": "M"}, "AccessionNumber")
    received = {"PatientID": "P1", "PatientName": "doe^john^^", "PatientBirthDate": "", "PatientSex": "M", "StudyInstanceUID": STUDY, "AccessionNumber": ACC}
    assert compare(received, expected) == ({}, {"PatientBirthDate": "19700101"})
    received |= {"PatientID": "P2", "StudyInstanceUID": "1.2.3"}
    conflicts, _ = compare(received, expected)
    assert conflicts == {"PatientID": ("P2", "P1"), "StudyInstanceUID": ("1.2.3", STUDY)}


def test_matching_instance_is_stored_untouched(archive):
    _order(archive)
    ds = instance(study=STUDY, accession=ACC)
    data = encoded(ds)
    assert archive.store.store(data, ExplicitVRLittleEndian).result == STORED
    assert archive.blobs.read(archive.index.get_instance(ds.SOPInstanceUID).blob_id).endswith(data)
    assert ReconciliationService(archive).items("all") == []


def test_wrong_patient_id_is_quarantined_not_filed_under_the_other_patient(archive):
    _order(archive)
    # The wrong Patient ID is a real patient of the archive.
    _store(archive, patient_id="P2", name="ROE^JANE", study="1.2.3.9")
    result, uid = _store(archive, patient_id="P2", name="ROE^JANE", study=STUDY, accession=ACC)
    assert result == STORED
    assert [str(r.StudyInstanceUID) for r in _find(archive, PatientID="P2")] == ["1.2.3.9"]
    assert _find(archive, AccessionNumber=ACC) == []
    assert _find(archive, "IMAGE", SOPInstanceUID=uid, StudyInstanceUID=STUDY) == []
    assert archive.index.get_instance(uid) is None  # WADO and the like do not see it either
    assert archive.index.get_instance(uid, include_quarantined=True).quarantined
    (view,) = _find(archive, "PATIENT", PatientID="P2", NumberOfPatientRelatedInstances="")
    assert view.NumberOfPatientRelatedInstances == 1
    # Held all the same: the modality may delete its copy.
    assert verify(archive.index, archive.blobs, [(SECONDARY_CAPTURE, uid)]).committed == [(SECONDARY_CAPTURE, uid)]
    # Sent again, identical: a duplicate, not a second quarantine.
    assert archive.store.store(encoded(_stored_dataset(archive, uid)), ExplicitVRLittleEndian).result == DUPLICATE
    unmatched, item = sorted(ReconciliationService(archive).items(), key=lambda i: i["id"])
    assert (unmatched["kind"], unmatched["study_uid"]) == ("unmatched", "1.2.3.9")
    assert (item["kind"], item["state"], item["order"], item["differences"]) == ("mismatch", "open", ACC, ["PatientID", "PatientName"])
    assert item["received"]["PatientID"] == "P2" and item["expected"]["PatientID"] == "P1"
    assert (item["instances"], item["quarantined"]) == (1, 1)


def _stored_dataset(archive, uid):
    ds = _stored(archive, uid)
    del ds.file_meta
    return ds


def test_link_releases_the_study_under_the_orders_identity(archive):
    _order(archive)
    uids = [_store(archive, patient_id="P2", name="ROE^JANE", study=STUDY, accession=ACC, series=STUDY + ".1")[1] for _ in range(3)]
    service = ReconciliationService(archive)
    (item,) = service.items()
    resolved = service.resolve(item["id"], "link", accession=ACC, reason="wrong ID typed at the console", by="test")
    assert resolved["state"] == "resolved" and resolved["resolution"]["action"] == "link"
    (study,) = _find(archive, AccessionNumber=ACC, NumberOfStudyRelatedInstances="")
    assert (study.PatientID, str(study.PatientName), study.NumberOfStudyRelatedInstances) == ("P1", "DOE^JOHN", 3)
    stored = _stored(archive, uids[0])
    assert (stored.PatientID, str(stored.PatientName)) == ("P1", "DOE^JOHN")
    original = stored.OriginalAttributesSequence[-1]
    assert original.ReasonForTheAttributeModification == "CORRECT"
    assert original.ModifiedAttributesSequence[0].PatientID == "P2"
    # The index records the new content's checksum: a storage commitment still holds.
    assert len(verify(archive.index, archive.blobs, [(SECONDARY_CAPTURE, u) for u in uids]).committed) == 3
    (entry,) = service.audit_log(STUDY)
    assert entry["old"]["PatientID"] == "P2" and entry["new"]["PatientID"] == "P1" and entry["by"] == "test"
    assert entry["reason"] == "wrong ID typed at the console" and entry["instances"] == 3
    with pytest.raises(AlreadyResolvedError):
        service.resolve(item["id"], "accept")


def test_correct_and_accept(archive):
    _order(archive)
    _, uid = _store(archive, patient_id="P9", name="X^Y", study=STUDY, accession=ACC)
    service = ReconciliationService(archive)
    (item,) = service.items()
    with pytest.raises(UnknownItemError):
        service.resolve(item["id"], "link", accession="NOPE")
    service.resolve(item["id"], "correct", identity={"PatientID": "P7", "PatientName": "SEVEN^PAT"})
    (study,) = _find(archive, StudyInstanceUID=STUDY)
    assert (study.PatientID, str(study.PatientName)) == ("P7", "SEVEN^PAT")

    other = "1.2.3.55"
    feed = Hl7Feed(archive)
    assert _ack(feed, m.orm("P1", "PO-2", accession="ACC0002", study_uid=other)) == "AA"
    _store(archive, patient_id="P1", name="DOE^JOHNNY", study=other, accession="ACC0002")
    (item,) = service.items()
    service.resolve(item["id"], "accept", reason="nickname")
    (study,) = _find(archive, StudyInstanceUID=other)
    assert str(study.PatientName) == "DOE^JOHNNY"  # as received


def test_coerce_rewrites_the_header_and_records_it(coerce_archive):
    archive = coerce_archive
    _order(archive)
    ds = instance(patient_id="WRONG", name="ROE^JANE", birth="", study="1.2.3.4.5", accession=ACC)
    assert archive.store.store(encoded(ds), ExplicitVRLittleEndian).result == STORED
    (study,) = _find(archive, AccessionNumber=ACC, PatientBirthDate="")
    assert (study.PatientID, str(study.PatientName), study.StudyInstanceUID, study.PatientBirthDate) == ("P1", "DOE^JOHN", STUDY, "19700101")
    stored = _stored(archive, ds.SOPInstanceUID)
    assert stored.PatientID == "P1" and stored.StudyInstanceUID == STUDY
    modified = stored.OriginalAttributesSequence[0]
    assert modified.ReasonForTheAttributeModification == "COERCE"
    assert modified.ModifiedAttributesSequence[0].PatientID == "WRONG"
    (item,) = ReconciliationService(archive).items("all")
    assert (item["kind"], item["state"]) == ("coerced", "resolved")
    assert item["differences"] == ["PatientID", "PatientName", "StudyInstanceUID"] and item["filled"] == ["PatientBirthDate"]
    (entry,) = ReconciliationService(archive).audit_log(STUDY)  # filed under the study it now belongs to
    assert entry["old"]["PatientID"] == "WRONG" and entry["new"]["PatientID"] == "P1"
    assert verify(archive.index, archive.blobs, [(SECONDARY_CAPTURE, ds.SOPInstanceUID)]).committed


def test_unmatched_then_the_order_arrives(archive):
    service = ReconciliationService(archive)
    feed = Hl7Feed(archive)
    assert _ack(feed, m.adt("A04", "P1")) == "AA"
    _store(archive, study=STUDY, accession=ACC)  # P1, DOE^JOHN: right, but no order yet
    _store(archive, patient_id="P2", study="1.2.3.66", accession="ACC0066")  # will contradict its order
    assert sorted(i["kind"] for i in service.items()) == ["unmatched", "unmatched"]
    assert len(_find(archive, StudyInstanceUID="1.2.3.66")) == 1  # unmatched studies are visible
    assert _ack(feed, m.orm("P1", "PO-1", accession=ACC, study_uid=STUDY)) == "AA"
    assert _ack(feed, m.orm("P1", "PO-66", accession="ACC0066", study_uid="1.2.3.66")) == "AA"
    items = {i["study_uid"]: i for i in service.items("all")}
    assert (items[STUDY]["state"], items[STUDY]["resolution"]["action"]) == ("resolved", "matched")
    assert (items["1.2.3.66"]["kind"], items["1.2.3.66"]["state"]) == ("mismatch", "open")
    assert _find(archive, StudyInstanceUID="1.2.3.66") == []  # quarantined after the fact


def test_adt_a08_and_a40_reach_the_stored_headers(archive):
    feed = Hl7Feed(archive)
    assert _ack(feed, m.adt("A04", "P1")) == "AA"
    assert _ack(feed, m.adt("A04", "P2", name="DOE^JON")) == "AA"
    _, uid1 = _store(archive, patient_id="P1", study="1.2.3.1")
    _, uid2 = _store(archive, patient_id="P2", name="DOE^JON", study="1.2.3.2")
    assert _ack(feed, m.adt("A08", "P1", name="DOE^JOHN^MARTIN")) == "AA"
    (patient,) = _find(archive, "PATIENT", PatientID="P1")
    assert str(patient.PatientName) == "DOE^JOHN^MARTIN"
    assert str(_stored(archive, uid1).PatientName) == "DOE^JOHN^MARTIN"
    assert _find(archive, "PATIENT", PatientName="DOE^JOHN") == []
    assert _ack(feed, m.merge("P1", "P2")) == "AA"
    assert _find(archive, "PATIENT", PatientID="P2") == []
    studies = sorted(str(s.StudyInstanceUID) for s in _find(archive, PatientID="P1"))
    assert studies == ["1.2.3.1", "1.2.3.2"]
    merged = _stored(archive, uid2)
    assert merged.PatientID == "P1" and merged.OriginalAttributesSequence[-1].ModifiedAttributesSequence[0].PatientID == "P2"
    actions = [e["action"] for e in ReconciliationService(archive).audit_log()]
    assert actions == ["patient update", "patient merge"]
    # An order for the merged-away ID now expects the survivor.
    assert _ack(feed, m.orm("P1", "PO-9", accession="ACC9", study_uid="1.2.3.9")) == "AA"


def test_feed_refuses_what_it_cannot_apply(archive):
    feed = Hl7Feed(archive)
    assert _ack(feed, m.message(m.msh("ORU^R01"), m.pid("P1"))) == "AR"
    assert _ack(feed, m.message(m.msh("ORM^O01"), m.pid("P1"), m.seg("ORC", {1: "NW", 2: "X"}), m.seg("OBR", {1: "1", 4: "1^X"}))) == "AE"
    assert _ack(feed, m.merge("P1", "P1")) == "AE"
