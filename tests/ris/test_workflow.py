"""The scheduled workflow end to end against `risnode serve` with real peers: python-hl7's
MLLP client (HIS), DCMTK findscu -W (modality worklist), pynetdicom (MPPS), and an MLLP
listener as the EHR and billing system."""
from __future__ import annotations

import csv
import io
import socket

import pytest

from tests.ris import hl7msgs as m
from tests.ris.dicom_peers import MppsScu, completed, findscu_worklist, mpps_dataset
from tests.ris.peers import err, msa, wait_until

pytestmark = pytest.mark.integration
SPS = "ScheduledProcedureStepSequence[0]"


@pytest.fixture(scope="module")
def ehr():
    from tests.ris.peers import Hl7Listener

    listener = Hl7Listener().start()
    yield listener
    listener.stop()


@pytest.fixture(scope="module")
def ris(module_ris_factory, ehr):
    return module_ris_factory(extra=["--ehr", f"127.0.0.1:{ehr.port}", "--station", "CT=CT1", "--station", "MR=MR1"])


def _order(ris, patient_id: str, placer: str, **kwargs) -> dict:
    ack = ris.send(m.orm(patient_id, placer, **kwargs))
    assert msa(ack)[0] == "AA", ack
    found = [o for o in ris.get("/api/orders") if o["placer_order"] == placer]
    assert len(found) == 1
    return found[0]


def test_register_order_and_timeline(ris):
    assert msa(ris.send(m.adt("A04", "WF1")))[0] == "AA"
    order = _order(ris, "WF1", "PO-WF1")
    assert order["status"] == "scheduled"
    assert order["station_ae"] == "CT1"
    assert len(order["accession"]) <= 16 and order["requested_procedure_id"] and order["sps_id"]
    assert order["study_uid"].startswith("1.2.826.0.1.3680043.10.1471.2.")
    detail = ris.get(f"/api/orders/{order['accession']}")
    assert [e["status"] for e in detail["timeline"]] == ["ordered", "scheduled"]
    assert all(e["at"] and e["source"].startswith("hl7 ORM^O01") for e in detail["timeline"])
    patient = ris.get("/api/patients/WF1")
    assert patient["name"] == "DOE^JOHN" and patient["insurance"][0]["policy_number"] == "POL123"


def test_order_with_time_study_uid_and_uninsured_flag(ris):
    assert msa(ris.send(m.adt("A01", "WF2", name="ROE^JANE", insured=False)))[0] == "AA"
    order = _order(ris, "WF2", "PO-WF2", when="203001150900", study_uid="1.2.3.4.5.6")
    assert order["scheduled"] == "2030-01-15T09:00:00"
    assert order["study_uid"] == "1.2.3.4.5.6"
    assert order["flags"] == ["no_insurance"]


def test_omi_with_ipc_keeps_the_placers_identifiers(ris):
    assert msa(ris.send(m.adt("A04", "WF3")))[0] == "AA"
    ack = ris.send(m.omi("WF3", "PO-WF3", when="203001160800", accession="ACCOMI1", station_ae="MR7", study_uid="1.2.3.99"))
    assert msa(ack)[0] == "AA", ack
    order = ris.get("/api/orders/ACCOMI1")
    assert (order["modality"], order["station_ae"], order["study_uid"], order["priority"]) == ("MR", "MR7", "1.2.3.99", "STAT")
    assert order["protocol"]["code"] == "MRBR1"
    assert order["diagnoses"][0]["code"] == "G43.909"


def test_worklist_matching_with_findscu(ris, tmp_path):
    assert msa(ris.send(m.adt("A04", "WF4", name="SMITH^ANNA")))[0] == "AA"
    acc = _order(ris, "WF4", "PO-WF4", when="203002011000")["accession"]
    _order(ris, "WF4", "PO-WF4b", when="203002011400", modality="MR", code="70551", meaning="MRI BRAIN")

    def accessions(match, **kw):
        return sorted(str(r.AccessionNumber) for r in findscu_worklist(ris.port, tmp_path, match, **kw))

    assert accessions({"PatientID": "WF4", f"{SPS}.Modality": "CT"}) == [acc]
    assert len(accessions({"PatientName": "smith^a*"})) == 2  # wildcard, case-insensitive
    assert accessions({"AccessionNumber": acc}) == [acc]
    assert accessions({f"{SPS}.ScheduledStationAETitle": "CT1", "PatientID": "WF4"}) == [acc]
    date_range = {f"{SPS}.ScheduledProcedureStepStartDate": "20300201-20300201", "PatientID": "WF4"}
    assert len(accessions(date_range)) == 2
    assert accessions({**date_range, f"{SPS}.ScheduledProcedureStepStartTime": "0900-1100"}) == [acc]
    assert accessions({f"{SPS}.ScheduledProcedureStepStartDate": "20300202-", "PatientID": "WF4"}) == []
    rp = ris.get(f"/api/orders/{acc}")["requested_procedure_id"]
    assert accessions({"RequestedProcedureID": rp}) == [acc]
    (answer,) = findscu_worklist(ris.port, tmp_path, {"AccessionNumber": acc})
    step = answer.ScheduledProcedureStepSequence[0]
    assert (step.Modality, step.ScheduledStationAETitle, step.ScheduledProcedureStepStartDate) == ("CT", "CT1", "20300201")
    assert step.ScheduledProtocolCodeSequence[0].CodeValue == "74177"
    assert answer.RequestedProcedureCodeSequence[0].CodeValue == "74177"
    assert str(answer.ReferringPhysicianName) == "WELBY^MARCUS"
    assert answer.StudyInstanceUID and answer.RequestedProcedureDescription == "CT ABD PELVIS W CONTRAST"


@pytest.mark.parametrize("charset, encoding, name", [("8859/1", "latin-1", "MÜLLER^Jürgen"), ("UNICODE UTF-8", "utf-8", "ÅSTRÖM^Ærø Ŝ")])
def test_names_arrive_intact_at_the_modality(ris, tmp_path, charset, encoding, name):
    pid = f"CS{encoding[:3].upper()}"
    ack = ris.send(m.adt("A04", pid, name=name, charset=charset), encoding=encoding)
    assert msa(ack)[0] == "AA", ack
    acc = _order(ris, pid, f"PO-{pid}")["accession"]
    (answer,) = findscu_worklist(ris.port, tmp_path, {"AccessionNumber": acc})
    assert str(answer.PatientName) == name
    assert answer.SpecificCharacterSet == ("ISO_IR 100" if encoding == "latin-1" else "ISO_IR 192")


def test_mpps_moves_the_order_and_final_state_is_final(ris, tmp_path):
    assert msa(ris.send(m.adt("A04", "WF5")))[0] == "AA"
    order = _order(ris, "WF5", "PO-WF5", when="203003010900")
    acc = order["accession"]
    scu = MppsScu(ris.port)
    uid = "1.2.826.0.1.3680043.10.1471.99.1"
    assert scu.create(mpps_dataset(acc, order["sps_id"], order["study_uid"]), uid)[0] == 0x0000
    assert ris.get(f"/api/orders/{acc}")["status"] == "in_progress"
    assert scu.create(mpps_dataset(acc, order["sps_id"], order["study_uid"]), uid)[0] == 0x0111  # duplicate
    assert scu.set(completed(series_uid="1.2.3.7"), uid)[0] == 0x0000
    detail = ris.get(f"/api/orders/{acc}")
    assert detail["status"] == "exam_complete"
    assert detail["performed"]["series"] == [{"uid": "1.2.3.7", "description": "AX 5mm", "images": 1}]
    assert detail["performed"]["station_ae"] == "CT1"
    code, status = scu.set(completed("DISCONTINUED"), uid)
    assert code == 0x0110 and status.ErrorID == 0xA710  # a final MPPS cannot change
    assert scu.set(completed(), "1.2.826.0.1.3680043.10.1471.99.404")[0] == 0x0112  # unknown instance
    bad = mpps_dataset(acc, order["sps_id"], order["study_uid"])
    bad.PerformedProcedureStepStatus = "COMPLETED"
    assert scu.create(bad, "1.2.826.0.1.3680043.10.1471.99.2")[0] == 0x0106
    # A completed step is no longer offered.
    assert findscu_worklist(ris.port, tmp_path, {"AccessionNumber": acc}) == []


def test_mpps_discontinued(ris):
    assert msa(ris.send(m.adt("A04", "WF6")))[0] == "AA"
    order = _order(ris, "WF6", "PO-WF6", when="203003020900")
    scu = MppsScu(ris.port)
    uid = "1.2.826.0.1.3680043.10.1471.99.6"
    assert scu.create(mpps_dataset(order["accession"], order["sps_id"], order["study_uid"]), uid)[0] == 0
    assert scu.set(completed("DISCONTINUED"), uid)[0] == 0
    assert ris.get(f"/api/orders/{order['accession']}")["status"] == "discontinued"


def test_report_goes_to_the_ehr_then_billing(ris, ehr):
    assert msa(ris.send(m.adt("A04", "WF7")))[0] == "AA"
    order = _order(ris, "WF7", "PO-WF7", when="203003030900")
    acc = order["accession"]
    assert ris.http("POST", f"/api/orders/{acc}/report", {"text": "x", "radiologist": "R", "status": "F"})[0] == 409
    scu = MppsScu(ris.port)
    uid = "1.2.826.0.1.3680043.10.1471.99.7"
    assert scu.create(mpps_dataset(acc, order["sps_id"], order["study_uid"]), uid)[0] == 0
    assert scu.set(completed(), uid)[0] == 0
    code, body = ris.http("POST", f"/api/orders/{acc}/report",
                          {"text": "No acute findings.\nAppendix normal.", "radiologist": "CURIE^MARIE", "status": "P"})
    assert code == 200, body
    wait_until(lambda: ris.get(f"/api/orders/{acc}")["status"] == "distributed", what="preliminary distributed")
    code, body = ris.http("POST", f"/api/orders/{acc}/report",
                          {"text": "No acute findings.\nAppendix normal | ok.", "radiologist": "CURIE^MARIE", "status": "F"})
    assert code == 200, body
    wait_until(lambda: ris.get(f"/api/orders/{acc}")["status"] == "billed", what="billed")
    orus = [x for x in ehr.messages("ORU^R01") if acc in x]
    assert [_field(x, "OBR", 25) for x in orus] == ["P", "F"]
    obx = [s.split("|")[5] for s in orus[-1].split("\r") if s.startswith("OBX")]
    assert obx == ["No acute findings.", "Appendix normal \\F\\ ok."]
    (dft,) = [x for x in ehr.messages("DFT^P03") if acc in x]
    assert _field(dft, "FT1", 25).startswith("74177^") and _field(dft, "FT1", 19).startswith("K35.80^")
    timeline = [e["status"] for e in ris.get(f"/api/orders/{acc}")["timeline"]]
    assert timeline[-5:] == ["reported", "distributed", "reported", "distributed", "billed"]
    outbound = [x for x in ris.get("/api/outbound") if x["accession"] == acc]
    assert [(x["kind"], x["state"]) for x in outbound] == [("ORU^R01", "acked"), ("ORU^R01", "acked"), ("DFT^P03", "acked")]
    # A correction is distributed again; the order stays billed.
    code, _ = ris.http("POST", f"/api/orders/{acc}/report", {"text": "Corrected.", "radiologist": "CURIE^MARIE", "status": "C"})
    assert code == 200
    wait_until(lambda: len([x for x in ehr.messages("ORU^R01") if acc in x]) == 3, what="corrected ORU")
    wait_until(lambda: ris.get(f"/api/orders/{acc}")["status"] == "billed", what="billed again")
    assert len([x for x in ehr.messages("DFT^P03") if acc in x]) == 1

    bill = ris.get(f"/api/orders/{acc}/superbill")
    assert bill["procedure"]["cpt"] == "74177" and bill["diagnoses"][0]["icd10"] == "K35.80"
    assert bill["insurance"][0]["company"] == "Acme Health" and bill["referring_physician"] == "WELBY^MARCUS"
    code, text = ris.http("GET", f"/api/orders/{acc}/superbill?format=csv")
    row = next(csv.DictReader(io.StringIO(text)))
    assert (row["cpt_code"], row["icd10_codes"], row["policy_number"]) == ("74177", "K35.80", "POL123")


def _field(message: str, segment: str, n: int) -> str:
    line = next(s for s in message.split("\r") if s.startswith(segment + "|"))
    fields = line.split("|")
    return fields[n] if n < len(fields) else ""


def test_order_control_cancel_change_status(ris, tmp_path):
    assert msa(ris.send(m.adt("A04", "WF8")))[0] == "AA"
    acc = _order(ris, "WF8", "PO-WF8", when="203004010900")["accession"]
    ack = ris.send(m.orm("WF8", "PO-WF8", control="XO", when="203004011100", code="74176", meaning="CT ABD PELVIS"))
    assert msa(ack)[0] == "AA", ack
    order = ris.get(f"/api/orders/{acc}")
    assert (order["scheduled"], order["procedure"]["code"]) == ("2030-04-01T11:00:00", "74176")
    assert msa(ris.send(m.orm("WF8", "PO-WF8", control="CA")))[0] == "AA"
    assert ris.get(f"/api/orders/{acc}")["status"] == "cancelled"
    assert findscu_worklist(ris.port, tmp_path, {"AccessionNumber": acc}) == []
    assert msa(ris.send(m.orm("WF8", "PO-WF8", control="XO", when="203004011200")))[0] == "AE"
    acc2 = _order(ris, "WF8", "PO-WF8b", when="203004020900")["accession"]
    assert msa(ris.send(m.orm("WF8", "PO-WF8b", control="SC", order_status="IP", filler=acc2)))[0] == "AA"
    assert ris.get(f"/api/orders/{acc2}")["status"] == "in_progress"
    assert msa(ris.send(m.orm("WF8", "PO-WF8b", control="DC")))[0] == "AA"
    assert ris.get(f"/api/orders/{acc2}")["status"] == "discontinued"


def test_arrive_via_api(ris):
    assert msa(ris.send(m.adt("A04", "WF9")))[0] == "AA"
    acc = _order(ris, "WF9", "PO-WF9", when="203005010900")["accession"]
    code, body = ris.http("POST", f"/api/orders/{acc}/arrive")
    assert code == 200 and body["status"] == "arrived"
    assert ris.http("POST", f"/api/orders/{acc}/arrive")[0] == 409
    assert ris.http("POST", "/api/orders/NOPE/arrive")[0] == 404
    assert [o["accession"] for o in ris.get("/api/orders?status=arrived&modality=CT&date=2030-05-01")] == [acc]


def test_merge_moves_orders_and_resolves_the_old_id(ris):
    assert msa(ris.send(m.adt("A04", "OLD1", name="TEMP^PATIENT")))[0] == "AA"
    assert msa(ris.send(m.adt("A04", "NEW1", name="REAL^PATIENT")))[0] == "AA"
    acc = _order(ris, "OLD1", "PO-OLD1", when="203006010900")["accession"]
    assert msa(ris.send(m.merge("NEW1", "OLD1")))[0] == "AA"
    assert ris.get("/api/patients/OLD1")["id"] == "NEW1"
    assert ris.get(f"/api/orders/{acc}")["patient_id"] == "NEW1"
    # An order placed later under the merged-away ID lands on the survivor.
    acc2 = _order(ris, "OLD1", "PO-OLD1b", when="203006020900")["accession"]
    assert ris.get(f"/api/orders/{acc2}")["patient_id"] == "NEW1"
    ack = ris.send(m.merge("NEW1", "NOBODY"))
    assert msa(ack)[0] == "AE" and err(ack).startswith("MRG^1^1")


def test_errors_are_acknowledged_with_err(ris):
    ack = ris.send(m.orm("UNKNOWN", "PO-X"))
    assert msa(ack)[0] == "AE" and err(ack).startswith("PID^1^3")
    assert msa(ris.send(m.adt("A04", "WF10")))[0] == "AA"
    ack = ris.send(m.orm("WF10", "PO-Y", modality=""))
    assert msa(ack)[0] == "AE" and err(ack).startswith("OBR^1^24")
    ack = ris.send(m.message(m.msh("ORU^R01"), m.pid("WF10")))
    assert msa(ack)[0] == "AR" and "200^" in ack
    ack = ris.send(m.message(m.msh("ADT^A99"), m.pid("WF10")))
    assert msa(ack)[0] == "AR" and "201^" in ack
    ack = ris.send("MSH|^~\\&|HIS\rPID|1||X\r")  # no type, no control ID
    assert msa(ack)[0] == "AR"
    ack = ris.send("this is not HL7")
    assert msa(ack)[0] == "AR"


def test_duplicate_control_id_is_answered_again_and_applied_once(ris):
    assert msa(ris.send(m.adt("A04", "WF11")))[0] == "AA"
    message = m.orm("WF11", "PO-DUP", control_id="DUP-1", when="203007010900")
    first, second = ris.send(message), ris.send(message)
    assert first == second and msa(first) == ("AA", "DUP-1")
    assert len([o for o in ris.get("/api/orders") if o["placer_order"] == "PO-DUP"]) == 1


def test_framing_errors_and_oversized_messages_do_not_stop_the_listener(ris):
    with socket.create_connection(("127.0.0.1", ris.hl7_port), timeout=10) as sock:
        sock.sendall(b"junk before any block\r\n")
        sock.sendall(b"\x0bMSH|^~\\&|HIS|HOSP|||20240501||ADT^A04|CUT|P|2.5\rPID|1")  # cut by a new block
        big = m.adt("A04", "BIG1", control_id="BIG-1") + "NTE|1||" + "x" * (1024 * 1024 + 10) + "\r"
        sock.sendall(b"\x0b" + big.encode() + b"\x1c\r")
        sock.sendall(b"\x0b" + m.adt("A04", "WF12", control_id="AFTER-JUNK").encode() + b"\x1c\r")
        replies = _read_blocks(sock, 2)
    assert msa(replies[0]) == ("AR", "BIG-1")
    assert msa(replies[1]) == ("AA", "AFTER-JUNK")
    assert msa(ris.send(m.adt("A04", "WF13")))[0] == "AA"
    assert ris.http("GET", "/api/patients/BIG1")[0] == 404


def _read_blocks(sock: socket.socket, count: int) -> list[str]:
    buf = b""
    while buf.count(b"\x1c\r") < count:
        data = sock.recv(65536)
        assert data, "connection closed"
        buf += data
    return [b.strip(b"\x0b").decode() for b in buf.split(b"\x1c\r")[:count]]


def test_cli_reads_the_live_data_folder(ris):
    import subprocess
    import sys

    from tests.peers import REPO

    assert msa(ris.send(m.adt("A04", "WF14")))[0] == "AA"
    acc = _order(ris, "WF14", "PO-WF14", when="203008010900")["accession"]
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "risnode.cli", "orders", "--data", str(ris.data), "--date", "2030-08-01"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0 and acc in out.stdout, out.stderr
    out = subprocess.run([sys.executable, "-m", "risnode.cli", "order", acc, "--data", str(ris.data)],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0 and "scheduled" in out.stdout and "hl7 ORM^O01" in out.stdout, out.stderr
    out = subprocess.run([sys.executable, "-m", "risnode.cli", "outbound", "--data", str(ris.data), "--json"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("["), out.stderr
