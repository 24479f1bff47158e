"""The whole journey against `pacsnode appliance` started as a real process, with real peers:
the HIS (python-hl7 MLLP client) registers a patient and orders a chest X-ray; the modality
queries the worklist (DCMTK findscu -W), sends MPPS IN PROGRESS, stores images carrying the
worklist's identity, sends MPPS COMPLETED and a storage commitment request (pynetdicom); the
order reaches Exam complete; a viewer finds the study by accession number (DCMTK findscu) and
retrieves it (DCMTK movescu to storescp); the report goes in through the API; the EHR listener
gets the ORU, the billing listener the DFT; the timeline shows every step. The second run puts
a deliberately wrong Patient ID on the images: it ends in the reconciliation view, not in the
wrong patient's record, and resolving it completes the exam."""
from __future__ import annotations

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from tests.integration.helpers import findscu, movescu
from tests.platform.dicomfiles import DIGITAL_XRAY, instance
from tests.platform.peers import Appliance, Modality, wait_for
from tests.peers import StoreSCP, dcmtk, require
from tests.ris import hl7msgs as m
from tests.ris.dicom_peers import findscu_worklist
from tests.ris.peers import Hl7Listener

pytestmark = pytest.mark.integration

CHEST = {"modality": "DX", "code": "71046", "meaning": "XR CHEST 2 VIEWS", "diagnoses": (("R05.9", "Cough"),)}


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    require(bool(dcmtk("findscu")), "DCMTK")
    folder = tmp_path_factory.mktemp("journey")
    ehr, billing = Hl7Listener().start(), Hl7Listener().start()
    viewer = StoreSCP(folder / "viewer", ["+xa"], ae_title="VIEWER").start()
    appliance = Appliance(folder / "data", [
        "--ehr", f"127.0.0.1:{ehr.port}", "--billing", f"127.0.0.1:{billing.port}", "--station", "DX=DX1",
        "--remote", f"VIEWER=127.0.0.1:{viewer.port}", "--workers", "2", "--study-stable-seconds", "2",
    ]).start()
    try:
        yield appliance, ehr, billing, viewer, folder
    finally:
        code = appliance.stop()
        viewer.stop()
        ehr.stop()
        billing.stop()
    assert code == 0, appliance.log_text()[-3000:]


def _order(appliance: Appliance, patient_id: str, name: str, placer: str) -> dict:
    assert appliance.his(m.adt("A04", patient_id, name=name)) == "AA"
    assert appliance.his(m.orm(patient_id, placer, **CHEST)) == "AA"
    (order,) = [o for o in appliance.ris("/api/orders") if o["placer_order"] == placer]
    # The RIS tells the PACS (OMI^O23) before any image can arrive.
    wait_for(lambda: any(o["accession"] == order["accession"] for o in appliance.pacs("/api/orders")), what="order at the PACS")
    return order


def _images(worklist, patient_id: str | None = None, count: int = 2):
    series = generate_uid()
    return [
        instance(
            sop_class=DIGITAL_XRAY, modality="DX", study=str(worklist.StudyInstanceUID), series=series,
            patient_id=patient_id or str(worklist.PatientID), name=str(worklist.PatientName),
            birth=str(worklist.PatientBirthDate), sex=str(worklist.PatientSex), accession=str(worklist.AccessionNumber),
            pixels=bytes(range(256)) * 16,
        )
        for _ in range(count)
    ]


def _status(appliance: Appliance, accession: str) -> str:
    return appliance.ris(f"/api/orders/{accession}")["status"]


def test_the_classic_chest_xray(platform):
    appliance, ehr, billing, viewer, folder = platform
    order = _order(appliance, "JOURNEY1", "CURIE^MARIE", "PO-CXR-1")
    acc = order["accession"]

    (worklist,) = findscu_worklist(appliance.ris_port, folder, {"AccessionNumber": acc}, aet="DX1")
    assert (str(worklist.PatientID), str(worklist.PatientName)) == ("JOURNEY1", "CURIE^MARIE")
    assert worklist.ScheduledProcedureStepSequence[0].ScheduledStationAETitle == "DX1"

    modality = Modality(appliance.port)
    mpps_uid = generate_uid()
    assert modality.mpps_create(worklist, mpps_uid) == 0
    wait_for(lambda: _status(appliance, acc) == "in_progress", what="in progress at the RIS (MPPS forwarded)")

    images = _images(worklist)
    statuses, (event_type, report) = modality.store_and_commit(images)
    assert statuses == [0, 0]
    assert event_type == 1 and "FailedSOPSequence" not in report
    assert sorted(i.ReferencedSOPInstanceUID for i in report.ReferencedSOPSequence) == sorted(i.SOPInstanceUID for i in images)

    assert modality.mpps_complete(mpps_uid, images) == 0
    wait_for(lambda: _status(appliance, acc) == "exam_complete", what="exam complete (IAN from the PACS)")

    (study,) = findscu(appliance, "STUDY", {"AccessionNumber": acc, "PatientID": None, "PatientName": None,
                                           "StudyInstanceUID": None, "NumberOfStudyRelatedInstances": None}, folder)
    assert (study.PatientID, str(study.PatientName), study.StudyInstanceUID) == ("JOURNEY1", "CURIE^MARIE", worklist.StudyInstanceUID)
    assert int(study.NumberOfStudyRelatedInstances) == 2
    moved = movescu(appliance, "VIEWER", {"StudyInstanceUID": str(study.StudyInstanceUID)})
    assert moved.returncode == 0 and moved.final.get("completed") == 2, moved.output
    received = [dcmread(p) for p in viewer.files()]
    assert sorted(r.SOPInstanceUID for r in received) == sorted(i.SOPInstanceUID for i in images)
    assert {(r.PatientID, r.AccessionNumber) for r in received} == {("JOURNEY1", acc)}

    code, body = appliance.http(appliance.ris_http_port, "POST", f"/api/orders/{acc}/report",
                                {"text": "No acute cardiopulmonary process.", "radiologist": "HOUSE^GREGORY", "status": "F"})
    assert code == 200, body
    (oru,) = ehr.wait_for(1, "ORU^R01")
    assert acc in oru and "No acute cardiopulmonary process." in oru
    (dft,) = billing.wait_for(1, "DFT^P03")
    assert "71046" in dft and "R05.9" in dft
    wait_for(lambda: _status(appliance, acc) == "billed", what="billed")

    timeline = appliance.ris(f"/api/orders/{acc}")["timeline"]
    events = [(e["status"], e["event"]) for e in timeline]
    expected = [("ordered", "ordered"), ("scheduled", "scheduled"), ("scheduled", "sent to pacs"), ("in_progress", "in_progress"),
                ("in_progress", "mpps completed"), ("exam_complete", "study complete"), ("reported", "final report"),
                ("distributed", "distributed"), ("billed", "billed")]
    assert [e for e in events if e in expected] == expected, events
    sources = {e["event"]: e["source"] for e in timeline}
    assert sources["in_progress"].startswith("mpps PACSNODE") and sources["study complete"].startswith("ian PACSNODE")


def test_a_wrong_patient_id_ends_in_the_reconciliation_view(platform):
    appliance, _, _, _, folder = platform
    order = _order(appliance, "JOURNEY2", "SKLODOWSKA^BRONISLAWA", "PO-CXR-2")
    acc = order["accession"]
    (worklist,) = findscu_worklist(appliance.ris_port, folder, {"AccessionNumber": acc}, aet="DX1")
    modality = Modality(appliance.port)
    mpps_uid = generate_uid()
    assert modality.mpps_create(worklist, mpps_uid) == 0
    # Typed at the console: the first patient's ID on the second patient's images.
    images = _images(worklist, patient_id="JOURNEY1")
    statuses, (event_type, report) = modality.store_and_commit(images)
    assert statuses == [0, 0] and event_type == 1  # held, so the modality may delete its copy
    assert modality.mpps_complete(mpps_uid, images) == 0

    def the_item():
        items = [i for i in appliance.pacs("/api/reconciliation") if i["order"] == acc]
        return items[0] if items else None

    item = wait_for(the_item, what="reconciliation item")
    assert (item["kind"], item["state"], item["quarantined"]) == ("mismatch", "open", 2)
    assert "PatientID" in item["differences"]
    assert (item["received"]["PatientID"], item["expected"]["PatientID"]) == ("JOURNEY1", "JOURNEY2")
    # Not in the wrong patient's record, and not findable by its accession number.
    first = findscu(appliance, "STUDY", {"PatientID": "JOURNEY1", "AccessionNumber": None, "NumberOfStudyRelatedInstances": None}, folder)
    assert [(s.AccessionNumber != acc, int(s.NumberOfStudyRelatedInstances)) for s in first] == [(True, 2)]
    assert findscu(appliance, "STUDY", {"AccessionNumber": acc, "PatientID": None}, folder) == []
    assert _status(appliance, acc) == "in_progress"  # images held for reconciliation are not announced

    code, resolved = appliance.http(appliance.http_port, "POST", f"/api/reconciliation/{item['id']}/resolve",
                                    {"action": "link", "accession": acc, "reason": "wrong ID at the console", "by": "tech"})
    assert code == 200, resolved
    assert resolved["state"] == "resolved"
    (study,) = findscu(appliance, "STUDY", {"AccessionNumber": acc, "PatientID": None, "PatientName": None}, folder)
    assert (study.PatientID, str(study.PatientName)) == ("JOURNEY2", "SKLODOWSKA^BRONISLAWA")
    wait_for(lambda: _status(appliance, acc) == "exam_complete", what="exam complete after the fix")
    detail = appliance.pacs(f"/api/reconciliation/{item['id']}")
    (entry,) = detail["audit"]
    assert entry["old"]["PatientID"] == "JOURNEY1" and entry["new"]["PatientID"] == "JOURNEY2" and entry["by"] == "tech"


def test_a_demographics_update_reaches_the_archive(platform):
    appliance, _, _, viewer, folder = platform
    _order(appliance, "JOURNEY3", "NOBEL^ALFRED", "PO-CXR-3")
    (worklist,) = [w for w in findscu_worklist(appliance.ris_port, folder, {"PatientID": "JOURNEY3"}, aet="DX1")]
    images = _images(worklist, count=1)
    statuses, _ = Modality(appliance.port).store_and_commit(images)
    assert statuses == [0]
    # The HIS corrects the name; the RIS passes it on (ADT^A08) and the archive follows.
    assert appliance.his(m.adt("A08", "JOURNEY3", name="NOBEL^ALFRED^BERNHARD")) == "AA"

    def renamed():
        found = findscu(appliance, "STUDY", {"PatientID": "JOURNEY3", "PatientName": None}, folder)
        return found and str(found[0].PatientName) == "NOBEL^ALFRED^BERNHARD"

    wait_for(renamed, what="new name in C-FIND")
    for path in viewer.files():
        path.unlink()
    moved = movescu(appliance, "VIEWER", {"StudyInstanceUID": str(worklist.StudyInstanceUID)})
    assert moved.returncode == 0 and moved.final.get("completed") == 1, moved.output
    (received,) = [dcmread(p) for p in viewer.files()]
    assert str(received.PatientName) == "NOBEL^ALFRED^BERNHARD"
    assert received.OriginalAttributesSequence[-1].ModifiedAttributesSequence[0].PatientName == "NOBEL^ALFRED"


def test_without_mpps_a_stable_study_completes_the_exam(platform):
    appliance, _, _, _, folder = platform
    acc = _order(appliance, "JOURNEY4", "MEITNER^LISE", "PO-CXR-4")["accession"]
    (worklist,) = findscu_worklist(appliance.ris_port, folder, {"AccessionNumber": acc}, aet="DX1")
    statuses, _ = Modality(appliance.port).store_and_commit(_images(worklist, count=1))
    assert statuses == [0]
    wait_for(lambda: _status(appliance, acc) == "exam_complete", what="exam complete after 2 s of quiet")
    events = [e["event"] for e in appliance.ris(f"/api/orders/{acc}")["timeline"]]
    assert events[-2:] == ["images arrived", "study complete"]
