"""What must survive: the outbound queue while the EHR is down and across a restart, and
orders across a restart between order and worklist query."""
from __future__ import annotations

import pytest

from tests.peers import free_port
from tests.ris import hl7msgs as m
from tests.ris.dicom_peers import findscu_worklist
from tests.ris.peers import Hl7Listener, msa, wait_until

pytestmark = pytest.mark.integration


def _fast_retries(tmp_path) -> str:
    path = tmp_path / "ris.toml"
    path.write_text("retry_initial = 0.2\nretry_max = 0.5\nack_timeout = 2.0\n")
    return str(path)


def _exam_complete(ris, patient_id: str, placer: str) -> str:
    assert msa(ris.send(m.orm(patient_id, placer, when="203101010900")))[0] == "AA"
    acc = next(o["accession"] for o in ris.get("/api/orders") if o["placer_order"] == placer)
    for state in ("IP", "CM"):
        assert msa(ris.send(m.orm(patient_id, placer, control="SC", order_status=state, filler=acc)))[0] == "AA"
    return acc


def test_queue_waits_for_the_ehr_across_a_restart(ris_factory, tmp_path):
    ehr = Hl7Listener(free_port())  # not started: the EHR is down
    ris = ris_factory(extra=["--config", _fast_retries(tmp_path), "--ehr", f"127.0.0.1:{ehr.port}"])
    assert msa(ris.send(m.adt("A04", "Q1")))[0] == "AA"
    accessions = [_exam_complete(ris, "Q1", f"PO-Q{n}") for n in range(3)]
    for acc in accessions:
        code, body = ris.http("POST", f"/api/orders/{acc}/report", {"text": f"Report {acc}", "radiologist": "RAD^ONE", "status": "F"})
        assert code == 200, body
    # Only the oldest is tried: nothing overtakes it.
    wait_until(lambda: ris.get("/api/outbound?state=pending")[0]["attempts"] >= 2, what="retries")
    pending = ris.get("/api/outbound?state=pending")
    assert [x["accession"] for x in pending] == accessions
    assert pending[0]["last_error"] and pending[0]["next_attempt"]
    assert [x["attempts"] for x in pending[1:]] == [0, 0]
    assert all(ris.get(f"/api/orders/{a}")["status"] == "reported" for a in accessions)

    ris.restart()
    assert [x["accession"] for x in ris.get("/api/outbound?state=pending")] == accessions
    ehr.start()
    try:
        wait_until(lambda: all(ris.get(f"/api/orders/{a}")["status"] == "billed" for a in accessions), what="all billed")
        orus, dfts = ehr.messages("ORU^R01"), ehr.messages("DFT^P03")
    finally:
        ehr.stop()
    assert [_accession(x) for x in orus] == accessions  # in order, each once
    assert [_accession(x) for x in dfts] == accessions
    controls = [x.split("\r")[0].split("|")[9] for x in orus + dfts]
    assert len(set(controls)) == len(controls)
    assert not ris.get("/api/outbound?state=pending")


def test_ehr_going_down_between_messages(ris_factory, tmp_path):
    ehr = Hl7Listener(free_port()).start()
    ris = ris_factory(extra=["--config", _fast_retries(tmp_path), "--ehr", f"127.0.0.1:{ehr.port}"])
    assert msa(ris.send(m.adt("A04", "Q2")))[0] == "AA"
    first = _exam_complete(ris, "Q2", "PO-Q2a")
    ris.http("POST", f"/api/orders/{first}/report", {"text": "one", "radiologist": "RAD", "status": "F"})
    wait_until(lambda: ris.get(f"/api/orders/{first}")["status"] == "billed", what="first billed")
    ehr.stop()
    second = _exam_complete(ris, "Q2", "PO-Q2b")
    ris.http("POST", f"/api/orders/{second}/report", {"text": "two", "radiologist": "RAD", "status": "F"})
    wait_until(lambda: any(x["attempts"] for x in ris.get("/api/outbound?state=pending")), what="a failed attempt")
    ehr.start()
    try:
        wait_until(lambda: ris.get(f"/api/orders/{second}")["status"] == "billed", what="second billed")
    finally:
        ehr.stop()
    assert [_accession(x) for x in ehr.messages("ORU^R01")] == [first, second]


def _accession(message: str) -> str:
    for segment in message.split("\r"):
        if segment.startswith("ORC|"):
            return segment.split("|")[3]
        if segment.startswith("FT1|"):
            return segment.split("|")[23]
    raise AssertionError(message)


def test_orders_survive_a_restart_before_the_worklist_query(ris_factory, tmp_path):
    ris = ris_factory(extra=["--station", "CT=CT9"])
    assert msa(ris.send(m.adt("A04", "R1", name="RESTART^ROSA")))[0] == "AA"
    assert msa(ris.send(m.orm("R1", "PO-R1", when="203102020800")))[0] == "AA"
    message = m.orm("R1", "PO-R2", when="203102020900", control_id="R-DUP")
    assert msa(ris.send(message))[0] == "AA"
    ris.restart()
    answers = findscu_worklist(ris.port, tmp_path, {"PatientID": "R1"}, aet="CT9")
    assert sorted(str(a.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime) for a in answers) == ["080000", "090000"]
    assert all(str(a.PatientName) == "RESTART^ROSA" for a in answers)
    # The message log survived too: a resend after the restart is not applied again.
    assert msa(ris.send(message)) == ("AA", "R-DUP")
    assert len(ris.get("/api/orders?date=2031-02-02")) == 2


def test_calling_aet_stands_in_for_an_empty_station(ris_factory, tmp_path):
    ris = ris_factory(extra=["--station", "CT=CT1", "--station", "MR=MR1", "--mwl-match-calling-aet"])
    assert msa(ris.send(m.adt("A04", "S1")))[0] == "AA"
    assert msa(ris.send(m.orm("S1", "PO-S1", when="203103030900")))[0] == "AA"
    assert msa(ris.send(m.orm("S1", "PO-S2", when="203103031000", modality="MR")))[0] == "AA"
    ct = findscu_worklist(ris.port, tmp_path, {"PatientID": "S1"}, aet="CT1")
    assert [a.ScheduledProcedureStepSequence[0].Modality for a in ct] == ["CT"]
    assert findscu_worklist(ris.port, tmp_path, {"PatientID": "S1"}, aet="OTHER") == []
    both = findscu_worklist(ris.port, tmp_path, {"PatientID": "S1", "ScheduledProcedureStepSequence[0].ScheduledStationAETitle": "MR1"}, aet="CT1")
    assert [a.ScheduledProcedureStepSequence[0].Modality for a in both] == ["MR"]
