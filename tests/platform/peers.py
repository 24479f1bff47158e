"""`pacsnode appliance` as a real process, and a modality on pynetdicom (MPPS, C-STORE and
storage commitment on one association)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from hl7.client import MLLPClient
from pydicom import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt

from tests.peers import REPO, free_port

MPPS = "1.2.840.10008.3.1.2.3.3"
STORAGE_COMMITMENT_PUSH = "1.2.840.10008.1.20.1"
STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"


class Appliance:
    """PACS (``ae_title``/``port``, so tests.integration.helpers can query it) and RIS together."""

    def __init__(self, data: Path, extra: list[str] | None = None) -> None:
        self.data = data
        self.ae_title, self.ris_ae_title = "PACSNODE", "RISNODE"
        self.port, self.hl7_port, self.http_port = free_port(), free_port(), free_port()
        self.ris_port, self.ris_hl7_port, self.ris_http_port = free_port(), free_port(), free_port()
        self.extra = extra or []
        self.proc: subprocess.Popen | None = None
        self.log = data.parent / f"{data.name}.appliance.log"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "pacsnode.cli", "appliance", "--data", str(self.data),
            "--port", str(self.port), "--hl7-port", str(self.hl7_port), "--http-port", str(self.http_port),
            "--ris-port", str(self.ris_port), "--ris-hl7-port", str(self.ris_hl7_port), "--ris-http-port", str(self.ris_http_port),
            *self.extra,
        ]

    def start(self, timeout: float = 60.0) -> "Appliance":
        self._log_fh = open(self.log, "ab")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        self.proc = subprocess.Popen(self.command(), stdout=self._log_fh, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while "\nready" not in self.log_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"appliance did not start (exit {self.proc.poll()}):\n{self.log_text()[-3000:]}")
            time.sleep(0.1)
        return self

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        self._log_fh.close()
        self.proc = None
        return code

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    # -- clients -------------------------------------------------------------------------

    def his(self, message: str) -> str:
        """Send one HL7 message to the RIS as the HIS does; the ACK's MSA-1."""
        with MLLPClient("127.0.0.1", self.ris_hl7_port, encoding="utf-8") as client:
            reply = client.send_message(message).decode("utf-8", "replace")
        return next(s for s in reply.strip("\x0b\x1c\r").split("\r") if s.startswith("MSA")).split("|")[1]

    def http(self, port: int, method: str, path: str, body: dict | None = None) -> tuple[int, object]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as rsp:
                return rsp.status, json.loads(rsp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def ris(self, path: str) -> object:
        code, body = self.http(self.ris_http_port, "GET", path)
        assert code == 200, (code, body)
        return body

    def pacs(self, path: str) -> object:
        code, body = self.http(self.http_port, "GET", path)
        assert code == 200, (code, body)
        return body


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached after {timeout}s")
        time.sleep(0.1)


class Modality:
    """A digital X-ray room on pynetdicom: MPPS to the PACS, images and storage commitment."""

    def __init__(self, port: int, ae_title: str = "DX1", called: str = "PACSNODE") -> None:
        self.port, self.ae_title, self.called = port, ae_title, called
        self.reports: list[tuple[int, Dataset]] = []
        self._report = threading.Event()

    def _ae(self) -> AE:
        ae = AE(ae_title=self.ae_title)
        return ae

    def mpps_create(self, worklist: Dataset, uid: str) -> int:
        ds = Dataset()
        item = Dataset()
        item.AccessionNumber = worklist.AccessionNumber
        item.StudyInstanceUID = worklist.StudyInstanceUID
        item.RequestedProcedureID = worklist.get("RequestedProcedureID", "")
        item.ScheduledProcedureStepID = worklist.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID
        ds.ScheduledStepAttributesSequence = Sequence([item])
        for key in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"):
            setattr(ds, key, worklist.get(key, ""))
        ds.PerformedStationAETitle = self.ae_title
        ds.PerformedProcedureStepID = "PPS" + uid[-6:]
        ds.PerformedProcedureStepStartDate = time.strftime("%Y%m%d")
        ds.PerformedProcedureStepStartTime = time.strftime("%H%M%S")
        ds.PerformedProcedureStepStatus = "IN PROGRESS"
        ds.Modality = "DX"
        ds.PerformedSeriesSequence = Sequence([])
        return self._n(lambda assoc: assoc.send_n_create(ds, MPPS, uid))

    def mpps_complete(self, uid: str, images: list[Dataset]) -> int:
        ds = Dataset()
        ds.PerformedProcedureStepStatus = "COMPLETED"
        ds.PerformedProcedureStepEndDate = time.strftime("%Y%m%d")
        ds.PerformedProcedureStepEndTime = time.strftime("%H%M%S")
        series = Dataset()
        series.SeriesInstanceUID = images[0].SeriesInstanceUID
        series.SeriesDescription = "CHEST PA/LAT"
        series.PerformingPhysicianName = ""
        series.ProtocolName = "CHEST 2V"
        series.OperatorsName = ""
        refs = []
        for image in images:
            ref = Dataset()
            ref.ReferencedSOPClassUID = image.SOPClassUID
            ref.ReferencedSOPInstanceUID = image.SOPInstanceUID
            refs.append(ref)
        series.ReferencedImageSequence = Sequence(refs)
        ds.PerformedSeriesSequence = Sequence([series])
        return self._n(lambda assoc: assoc.send_n_set(ds, MPPS, uid))

    def _n(self, send) -> int:
        ae = self._ae()
        ae.add_requested_context(MPPS)
        assoc = ae.associate("127.0.0.1", self.port, ae_title=self.called)
        assert assoc.is_established
        try:
            status, _ = send(assoc)
            return status.Status
        finally:
            assoc.release()

    def _on_report(self, event: evt.Event):
        self.reports.append((event.event_type, event.event_information))
        self._report.set()
        status = Dataset()
        status.Status = 0
        return status, None

    def store_and_commit(self, images: list[Dataset], timeout: float = 30.0) -> tuple[list[int], tuple[int, Dataset]]:
        """C-STORE the images, then ask for storage commitment on the same association and
        wait for the N-EVENT-REPORT there."""
        ae = self._ae()
        for cls in {str(i.SOPClassUID) for i in images}:
            ae.add_requested_context(cls, ExplicitVRLittleEndian)
        ae.add_requested_context(STORAGE_COMMITMENT_PUSH)
        self._report.clear()
        assoc = ae.associate("127.0.0.1", self.port, ae_title=self.called, evt_handlers=[(evt.EVT_N_EVENT_REPORT, self._on_report)])
        assert assoc.is_established
        try:
            statuses = [assoc.send_c_store(image).Status for image in images]
            request = Dataset()
            request.TransactionUID = generate_uid()
            items = []
            for image in images:
                item = Dataset()
                item.ReferencedSOPClassUID = image.SOPClassUID
                item.ReferencedSOPInstanceUID = image.SOPInstanceUID
                items.append(item)
            request.ReferencedSOPSequence = Sequence(items)
            status, _ = assoc.send_n_action(request, 1, STORAGE_COMMITMENT_PUSH, STORAGE_COMMITMENT_INSTANCE)
            assert status.Status == 0, status
            assert self._report.wait(timeout), "no storage commitment report"
        finally:
            assoc.release()
        return statuses, self.reports[-1]
