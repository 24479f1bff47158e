"""DCMTK findscu (worklist mode) and pynetdicom MPPS against a running RIS."""
from __future__ import annotations

import itertools
import subprocess
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid
from pynetdicom import AE

from tests.peers import dcmtk

MPPS = "1.2.840.10008.3.1.2.3.3"
RETURN_KEYS = [
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyInstanceUID",
    "RequestedProcedureID", "RequestedProcedureDescription", "ReferringPhysicianName", "RequestingPhysician",
    "RequestedProcedureCodeSequence[0].CodeValue",
    "ScheduledProcedureStepSequence[0].ScheduledStationAETitle",
    "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime",
    "ScheduledProcedureStepSequence[0].Modality",
    "ScheduledProcedureStepSequence[0].ScheduledProcedureStepID",
    "ScheduledProcedureStepSequence[0].ScheduledProcedureStepDescription",
    "ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence[0].CodeValue",
]
_runs = itertools.count()


def findscu_worklist(port: int, folder: Path, match: dict[str, str], aet: str = "MODALITY", called: str = "RISNODE",
                     extra: list[str] | None = None) -> list[Dataset]:
    """Query with ``findscu -W``; ``match`` maps DCMTK key paths to values (return keys are added)."""
    out = folder / f"mwl{next(_runs)}"
    out.mkdir(parents=True)
    keys = dict.fromkeys(RETURN_KEYS, "")
    keys.update(match)
    cmd = [dcmtk("findscu"), "-W", "-aet", aet, "-aec", called, "-X", "-od", str(out), *(extra or [])]
    for key, value in keys.items():
        cmd += ["-k", f"{key}={value}" if value else key]
    cmd += ["127.0.0.1", str(port)]
    result = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def mpps_dataset(accession: str, sps_id: str, study_uid: str, station: str = "CT1") -> Dataset:
    ds = Dataset()
    item = Dataset()
    item.AccessionNumber = accession
    item.ScheduledProcedureStepID = sps_id
    item.StudyInstanceUID = study_uid
    item.RequestedProcedureID = ""
    ds.ScheduledStepAttributesSequence = Sequence([item])
    ds.PatientName = ""
    ds.PatientID = ""
    ds.PerformedStationAETitle = station
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedProcedureStepStartDate = "20240501"
    ds.PerformedProcedureStepStartTime = "101500"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.Modality = "CT"
    ds.StudyID = "1"
    ds.PerformedSeriesSequence = Sequence([])
    return ds


def completed(status: str = "COMPLETED", series_uid: str | None = None) -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepEndDate = "20240501"
    ds.PerformedProcedureStepEndTime = "103000"
    series = Dataset()
    series.SeriesInstanceUID = series_uid or generate_uid()
    series.SeriesDescription = "AX 5mm"
    series.PerformingPhysicianName = ""
    series.ProtocolName = "ABD"
    series.OperatorsName = ""
    image = Dataset()
    image.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    image.ReferencedSOPInstanceUID = generate_uid()
    series.ReferencedImageSequence = Sequence([image])
    ds.PerformedSeriesSequence = Sequence([series])
    return ds


class MppsScu:
    """A modality's MPPS SCU on pynetdicom, one association per call."""

    def __init__(self, port: int, aet: str = "CT1", called: str = "RISNODE") -> None:
        self.port, self.aet, self.called = port, aet, called

    def _assoc(self):
        ae = AE(ae_title=self.aet)
        ae.add_requested_context(MPPS)
        assoc = ae.associate("127.0.0.1", self.port, ae_title=self.called)
        assert assoc.is_established
        return assoc

    def create(self, ds: Dataset, uid: str | None) -> tuple[int, Dataset | None]:
        assoc = self._assoc()
        try:
            status, attrs = assoc.send_n_create(ds, MPPS, uid)
            return status.Status, (status, attrs)
        finally:
            assoc.release()

    def set(self, ds: Dataset, uid: str) -> tuple[int, Dataset]:
        assoc = self._assoc()
        try:
            status, _ = assoc.send_n_set(ds, MPPS, uid)
            return status.Status, status
        finally:
            assoc.release()
