"""The reconciliation view: over HTTP (aiohttp's test client on the routes `build_app` adds),
in the CLI (`pacsnode reconcile`), and the worklist look-up for accession numbers no order
announced."""
from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from pacsnode import cli
from pacsnode.config import NodeConfig
from pacsnode.services.archive import Archive
from pacsnode.services.hl7feed import Hl7Feed
from pacsnode.services.reconcile import ReconciliationService
from pacsnode.web.reconciliation import add_routes
from tests.platform.dicomfiles import encoded, instance
from tests.ris import hl7msgs as m

STUDY = "1.2.3.200"


def _archive(path, **kw) -> Archive:
    return Archive.open(NodeConfig(data=path, index_map_size=1 << 28, workers=1, hl7_port=29999, **kw))


def _mismatch(archive: Archive) -> None:
    feed = Hl7Feed(archive)
    feed.receive(m.adt("A04", "P1").encode())
    feed.receive(m.orm("P1", "PO1", accession="ACC1", study_uid=STUDY).encode())
    archive.store.store(encoded(instance(study=STUDY, accession="ACC1", patient_id="P2")), ExplicitVRLittleEndian)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_http_routes(tmp_path, loop):
    archive = _archive(tmp_path / "pacs")
    _mismatch(archive)

    async def scenario() -> None:
        app = web.Application()
        add_routes(app, archive)
        async with TestClient(TestServer(app)) as client:
            rsp = await client.get("/api/reconciliation")
            (item,) = await rsp.json()
            assert (rsp.status, item["kind"], item["differences"]) == (200, "mismatch", ["PatientID"])
            assert (await client.get("/api/reconciliation?state=bogus")).status == 400
            assert (await client.get("/api/reconciliation/999")).status == 404
            rsp = await client.post(f"/api/reconciliation/{item['id']}/resolve", data=b"not json")
            assert rsp.status == 400 and "JSON" in (await rsp.json())["error"]
            rsp = await client.post(f"/api/reconciliation/{item['id']}/resolve", json={"action": "link", "accession": "NOPE"})
            assert rsp.status == 404
            rsp = await client.post(f"/api/reconciliation/{item['id']}/resolve", json={"action": "link", "accession": "ACC1", "by": "ana"})
            resolved = await rsp.json()
            assert (rsp.status, resolved["state"], resolved["resolution"]["by"]) == (200, "resolved", "ana")
            rsp = await client.post(f"/api/reconciliation/{item['id']}/resolve", json={"action": "accept"})
            assert rsp.status == 409
            detail = await (await client.get(f"/api/reconciliation/{item['id']}")).json()
            assert detail["audit"][0]["new"]["PatientID"] == "P1"
            audit = await (await client.get(f"/api/audit?study={STUDY}")).json()
            assert [e["action"] for e in audit] == ["resolve link"]
            assert (await client.get("/api/reconciliation")).status == 200
            assert [o["accession"] for o in await (await client.get("/api/orders")).json()] == ["ACC1"]

    try:
        if loop == "uvloop":
            import uvloop

            uvloop.run(scenario())
        else:
            asyncio.run(scenario())
    finally:
        archive.close()


def test_cli(tmp_path, capsys):
    data = tmp_path / "pacs"
    archive = _archive(data)
    _mismatch(archive)
    archive.close()
    assert cli.main(["reconcile", "--data", str(data)]) == 0
    line = capsys.readouterr().out.strip()
    assert "mismatch" in line and "P2 -> P1" in line and "PatientID" in line
    assert cli.main(["reconcile", "show", "1", "--data", str(data)]) == 0
    assert "(order: P1)" in capsys.readouterr().out
    assert cli.main(["reconcile", "resolve", "1", "--set", "PatientID=P1", "--reason", "typo", "--data", str(data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "resolved"
    assert cli.main(["reconcile", "resolve", "1", "--accept", "--data", str(data)]) == 1
    assert "resolved" in capsys.readouterr().err
    assert cli.main(["reconcile", "audit", "--data", str(data)]) == 0
    assert "'P2' -> 'P1'" in capsys.readouterr().out
    assert cli.main(["reconcile", "--data", str(tmp_path / "nothing")]) == 1


def test_cli_resolve_needs_one_action(tmp_path):
    data = tmp_path / "pacs"
    _archive(data).close()
    with pytest.raises(SystemExit) as stopped:
        cli.main(["reconcile", "resolve", "1", "--data", str(data)])
    assert stopped.value.code == 2


def test_worklist_look_up_for_an_unannounced_accession(tmp_path):
    archive = _archive(tmp_path / "pacs", identity_policy="coerce")
    try:
        archive.store.store(encoded(instance(study=STUDY, accession="ACC7", patient_id="WRONG", name="X^Y")), ExplicitVRLittleEndian)
        service = ReconciliationService(archive)
        asked: list[str] = []

        def find(accession: str):
            asked.append(accession)
            answer = Dataset()
            answer.AccessionNumber = accession
            answer.PatientID, answer.PatientName, answer.PatientBirthDate, answer.PatientSex = "P7", "SEVEN^PAT", "19800101", "F"
            answer.StudyInstanceUID = STUDY
            return [answer]

        assert service.look_up_unmatched(lambda acc: None, "test") == 0  # the RIS is down: try later
        assert service.look_up_unmatched(find, "worklist RISNODE") == 1
        assert service.look_up_unmatched(find, "worklist RISNODE") == 0  # asked once
        assert asked == ["ACC7"]
        (item,) = service.items("all")
        assert (item["kind"], item["state"], item["resolution"]["by"]) == ("coerced", "resolved", "worklist RISNODE")
        q = Dataset()
        q.QueryRetrieveLevel = "STUDY"
        q.StudyInstanceUID = STUDY
        q.PatientID = ""
        (study,) = archive.query.find(q, "STUDY")
        assert study.PatientID == "P7"
    finally:
        archive.close()
