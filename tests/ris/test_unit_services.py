"""The services over a real LMDB store in a temporary folder, without sockets: inbound
messages and their ACKs, worklist matching, and the outbound worker with the MLLP
protocol and client on asyncio and uvloop."""
from __future__ import annotations

import asyncio
from datetime import datetime

import pytest
import uvloop
from pydicom import Dataset
from pydicom.sequence import Sequence

from risnode.config import Endpoint, build
from risnode.errors import Conflict
from risnode.hl7.message import read_ack
from risnode.mllp import MllpClient, MllpServerProtocol
from risnode.services import outbound, results
from risnode.services.ris import Ris
from risnode.store import Store, Writer
from risnode.store import outbound as queue
from tests.ris import hl7msgs as m

NOW = datetime(2024, 5, 1, 9, 0)


@pytest.fixture
def ris(tmp_path):
    store = Store(tmp_path / "data", map_size=64 * 1024**2)
    writer = Writer(store)
    config = build({"station": ["CT=CT1"], "ehr": "127.0.0.1:9"})
    yield Ris(config, store, writer, clock=lambda: NOW)
    writer.close()
    store.close()


def send(ris: Ris, text: str) -> tuple[str, str, str]:
    return read_ack(asyncio.run(ris.receive_hl7(text.encode())))


def test_order_gets_identifiers_and_the_next_free_slot(ris):
    assert send(ris, m.adt("A04", "P1"))[0] == "AA"
    assert send(ris, m.orm("P1", "PO1"))[0] == "AA"
    assert send(ris, m.orm("P1", "PO2"))[0] == "AA"
    (a, _), (b, _) = ris.orders()
    assert (a.accession, b.accession) == ("24050100001", "24050100002")
    assert (a.scheduled, b.scheduled) == ("2024-05-01T09:00:00", "2024-05-01T09:20:00")
    assert a.requested_procedure_id != b.requested_procedure_id and a.sps_id != b.sps_id and a.study_uid != b.study_uid
    # Cancelling frees the slot for the next order.
    assert send(ris, m.orm("P1", "PO1", control="CA"))[0] == "AA"
    assert send(ris, m.orm("P1", "PO3"))[0] == "AA"
    assert ris.order("24050100003")[0].scheduled == "2024-05-01T09:00:00"


def test_a_failing_group_rolls_back_the_whole_message_but_it_is_logged(ris):
    assert send(ris, m.adt("A04", "P1"))[0] == "AA"
    good = m.orm("P1", "PO1").rstrip("\r").split("\r")
    bad = m.orm("P1", "PO2", modality="").rstrip("\r").split("\r")
    text = m.message(*good, *bad[3:])  # two ORC groups, the second without modality
    code, control, error = send(ris, text)
    assert code == "AE" and "OBR-24" in error
    assert ris.orders() == []
    assert send(ris, text)[0] == "AE"  # the same answer again, still not applied


def test_supplied_accession_must_be_new(ris):
    assert send(ris, m.adt("A04", "P1"))[0] == "AA"
    assert send(ris, m.orm("P1", "PO1", accession="MYACC"))[0] == "AA"
    code, _, error = send(ris, m.orm("P1", "PO2", accession="MYACC"))
    assert code == "AE" and "already exists" in error
    assert send(ris, m.orm("P1", "PO1"))[0] == "AE"  # placer order number reused


def test_a08_updates_and_a40_merges(ris):
    assert send(ris, m.adt("A04", "P1", name="OLD^NAME"))[0] == "AA"
    assert send(ris, m.adt("A08", "P1", name="NEW^NAME"))[0] == "AA"
    assert ris.patient("P1").name == "NEW^NAME"
    assert send(ris, m.adt("A04", "P2", insured=False))[0] == "AA"
    assert send(ris, m.orm("P2", "PO1"))[0] == "AA"
    assert send(ris, m.merge("P1", "P2"))[0] == "AA"
    assert ris.patient("P2").id == "P1" and ris.patient("P1").merged_ids == ["P2"]
    assert ris.orders()[0][0].patient_id == "P1"
    assert send(ris, m.adt("A08", "P2", name="LATEST^NAME"))[0] == "AA"  # updates the survivor
    assert ris.patient("P1").name == "LATEST^NAME"
    assert send(ris, m.merge("P1", "P2"))[0] == "AE"  # already merged


def _query(**keys) -> Dataset:
    q = Dataset()
    step = Dataset()
    for keyword, value in keys.items():
        setattr(step if keyword in ("Modality", "ScheduledStationAETitle", "ScheduledProcedureStepStartDate",
                                    "ScheduledProcedureStepStartTime") else q, keyword, value)
    for keyword in ("PatientName", "AccessionNumber"):
        if keyword not in q:
            setattr(q, keyword, "")
    step.setdefault("Modality", "")
    q.ScheduledProcedureStepSequence = Sequence([step])
    return q


def test_worklist_matching_and_return_keys(ris):
    assert send(ris, m.adt("A04", "P1", name="O'BRIEN^Seán", charset="UNICODE UTF-8"))[0] == "AA"
    assert send(ris, m.orm("P1", "PO1", when="202405011000"))[0] == "AA"
    assert send(ris, m.orm("P1", "PO2", when="202405021000", modality="MR"))[0] == "AA"
    assert len(ris.worklist(_query(PatientName="o'brien*"), "X")) == 2
    assert len(ris.worklist(_query(PatientName="*SEÁN"), "X")) == 2  # case-insensitive beyond ASCII
    (answer,) = ris.worklist(_query(Modality="MR"), "X")
    assert answer.SpecificCharacterSet == "ISO_IR 192"
    assert set(answer.dir()) == {"SpecificCharacterSet", "PatientName", "AccessionNumber", "ScheduledProcedureStepSequence"}
    assert answer.ScheduledProcedureStepSequence[0].Modality == "MR"
    assert len(ris.worklist(_query(ScheduledProcedureStepStartDate="20240501-20240501", ScheduledProcedureStepStartTime="0930-1030"), "X")) == 1
    assert len(ris.worklist(_query(ScheduledProcedureStepStartDate="20240501-20240502", ScheduledProcedureStepStartTime="1030-"), "X")) == 1
    unknown = _query()
    unknown.PatientWeight = None
    assert "PatientWeight" in ris.worklist(unknown, "X")[0]


def test_reporting_rules(ris):
    assert send(ris, m.adt("A04", "P1"))[0] == "AA"
    assert send(ris, m.orm("P1", "PO1"))[0] == "AA"
    acc = ris.orders()[0][0].accession
    for control in ("IP", "CM"):
        assert send(ris, m.orm("P1", "PO1", control="SC", order_status=control))[0] == "AA"
    with pytest.raises(Conflict, match="no final report"):
        asyncio.run(ris.report(acc, "text", "RAD", "C"))
    order = asyncio.run(ris.report(acc, "text", "RAD", "F"))
    assert order.status == "reported"
    with pytest.raises(Conflict, match="send C"):
        asyncio.run(ris.report(acc, "text", "RAD", "F"))
    (message,) = ris.outbound("pending")
    assert (message.role, message.kind, message.on_ack) == ("ehr", "ORU^R01", "distributed")
    bill = ris.superbill(acc)
    assert bill["procedure"]["cpt"] == "74177" and bill["diagnoses"][0]["icd10"] == "K35.80"
    assert results.superbill_csv(bill).splitlines()[0].startswith("accession,patient_id")


class _Ehr:
    """An in-process MLLP listener built on our own protocol, answering AA or AE."""

    def __init__(self, code: str = "AA") -> None:
        self.code = code
        self.received: list[bytes] = []

    async def on_message(self, raw: bytes) -> bytes:
        self.received.append(raw)
        control = raw.split(b"\r")[0].split(b"|")[9]
        return b"MSH|^~\\&|EHR|H|RIS|R|2024||ACK|X|P|2.5\rMSA|" + self.code.encode() + b"|" + control + b"\r"

    async def on_oversized(self, head: bytes, size: int) -> bytes:
        raise AssertionError("unexpected")


@pytest.fixture(params=["asyncio", "uvloop"])
def run_loop(request):
    """Run a coroutine on both loops; any exception the loop reports fails the test."""

    def run(coro):
        loop = asyncio.new_event_loop() if request.param == "asyncio" else uvloop.new_event_loop()
        errors = []
        loop.set_exception_handler(lambda lp, context: errors.append(context))
        try:
            return loop.run_until_complete(coro)
        finally:
            loop.close()
            assert not errors, errors

    return run


def test_outbound_worker_retries_until_aa_in_order(ris, run_loop):
    assert send(ris, m.adt("A04", "P1"))[0] == "AA"

    async def scenario():
        ehr = _Ehr("AE")
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: MllpServerProtocol(ehr.on_message, ehr.on_oversized, 65536), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        ctx = ris.context("test")
        for n in range(3):
            await ris.writer(outbound.enqueue, ctx, "ehr", "ORU^R01", f"A{n}",
                             lambda cid, n=n: m.message(m.msh("ORU^R01", cid), f"NTE|{n}"), "distributed")
        client = MllpClient(65536, 2.0)
        worker = outbound.Worker("ehr", ris.store, ris.writer, Endpoint("127.0.0.1", port), client.request,
                                 ris.context, lambda tx, msg, ctx: None, 0.01, 0.05)
        task = loop.create_task(worker.run())
        while len(ehr.received) < 3:  # the head is retried while the EHR answers AE
            await asyncio.sleep(0.01)
        assert len({r.split(b"\r")[1] for r in ehr.received}) == 1
        ehr.code = "AA"
        while ris.outbound("pending"):
            await asyncio.sleep(0.01)
        worker.stop()
        await task
        await client.close()
        server.close()
        await server.wait_closed()
        return ehr.received

    received = run_loop(scenario())
    bodies = [r.split(b"\r")[1] for r in received]
    assert bodies[-3:] == [b"NTE|0", b"NTE|1", b"NTE|2"]
    with ris.store.read() as tx:
        messages = queue.listing(tx)
    assert [x.state for x in messages] == ["acked"] * 3 and messages[0].attempts >= 2 and not messages[0].last_error
