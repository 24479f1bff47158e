"""Generated data: a small set whose every attribute the query/retrieve tests know, and
many tiny instances for tests that need many matches.

Three patients, four studies, six series, thirteen 8x8 instances, written with pydicom as
Part 10 files in Explicit VR Little Endian. UIDs are fixed (not random), so expectations
can name them; each test loads them into a fresh node.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

# Under the node's own root (pacsnode.dicom.uids.UID_ROOT), branch 999 for test data.
UID_ROOT = "1.2.826.0.1.3680043.10.1471.999."

SOP_CLASSES = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "MR": "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
    "OT": "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
}


@dataclass(frozen=True)
class Patient:
    id: str
    name: str
    birth_date: str
    sex: str


@dataclass(frozen=True)
class Study:
    key: str  # short name used by the tests: "S1".."S4"
    patient: Patient
    date: str
    time: str
    accession: str
    description: str
    # One (modality, instance count) per series.
    series: tuple[tuple[str, int], ...]

    @property
    def uid(self) -> str:
        return f"{UID_ROOT}1.{self.key[1:]}"


@dataclass(frozen=True)
class Instance:
    path: Path
    study: Study
    series_uid: str
    series_number: int
    modality: str
    sop_class_uid: str
    sop_instance_uid: str
    instance_number: int
    acquisition_datetime: str
    content_time: str


PATIENTS = {
    "P1": Patient("PNGEN-1", "Doe^John", "19700101", "M"),
    "P2": Patient("PNGEN-2", "Smith^Anna^Maria", "19851224", "F"),
    "P3": Patient("PNGEN-3", "doe^jane", "19991231", "F"),
}

STUDIES = (
    Study("S1", PATIENTS["P1"], "20200115", "083000", "ACC-1001", "CT chest", (("CT", 3), ("CT", 2))),
    Study("S2", PATIENTS["P1"], "20210610", "141500.123", "ACC-1002", "MR head", (("MR", 2),)),
    Study("S3", PATIENTS["P2"], "20200301", "235959", "ACC-2001", "CT+MR abdomen", (("CT", 1), ("MR", 2))),
    Study("S4", PATIENTS["P3"], "20191231", "000000", "ACC-3001", "screen capture", (("OT", 3),)),
)


@dataclass
class GeneratedSet:
    folder: Path
    instances: list[Instance] = field(default_factory=list)

    @property
    def paths(self) -> list[Path]:
        return [i.path for i in self.instances]

    def study(self, key: str) -> Study:
        return next(s for s in STUDIES if s.key == key)

    def of_study(self, key: str) -> list[Instance]:
        return [i for i in self.instances if i.study.key == key]

    def series_uids(self, key: str) -> list[str]:
        return list(dict.fromkeys(i.series_uid for i in self.of_study(key)))

    def of_series(self, series_uid: str) -> list[Instance]:
        return [i for i in self.instances if i.series_uid == series_uid]


def _instance_dataset(study: Study, inst: Instance) -> Dataset:
    p = study.patient
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = inst.sop_class_uid
    ds.SOPInstanceUID = inst.sop_instance_uid
    ds.StudyDate = study.date
    ds.SeriesDate = study.date
    ds.AcquisitionDate = study.date
    ds.ContentDate = study.date
    ds.AcquisitionDateTime = inst.acquisition_datetime
    ds.StudyTime = study.time
    ds.ContentTime = inst.content_time
    ds.AccessionNumber = study.accession
    ds.Modality = inst.modality
    ds.ReferringPhysicianName = "Ref^Physician"
    ds.StudyDescription = study.description
    ds.SeriesDescription = f"{inst.modality} series {inst.series_number}"
    ds.PatientName = p.name
    ds.PatientID = p.id
    ds.PatientBirthDate = p.birth_date
    ds.PatientSex = p.sex
    ds.StudyInstanceUID = study.uid
    ds.SeriesInstanceUID = inst.series_uid
    ds.StudyID = study.key
    ds.SeriesNumber = inst.series_number
    ds.InstanceNumber = inst.instance_number
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = 8
    ds.Columns = 8
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    # Different pixels per instance, so a mix-up between instances shows.
    seed = int(inst.sop_instance_uid.replace(".", "")[-6:]) % 4096
    ds.PixelData = ((np.arange(64, dtype=np.uint32) * 37 + seed) % 4096).astype("<u2").tobytes()
    return ds


def generate(folder: Path, studies: tuple[Study, ...] = STUDIES) -> GeneratedSet:
    """Write the data set (or other ``studies``) under ``folder``, one file per instance, and
    describe it. A series holds at most 5 instances (times are made from the instance number)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = GeneratedSet(folder)
    for study in studies:
        n = study.key[1:]
        for s_index, (modality, count) in enumerate(study.series, start=1):
            series_uid = f"{UID_ROOT}2.{n}.{s_index}"
            for i in range(1, count + 1):
                hour = 8 + s_index  # series s acquired during hour 8+s
                inst = Instance(
                    path=folder / f"{study.key}_{s_index}_{i}.dcm",
                    study=study,
                    series_uid=series_uid,
                    series_number=s_index,
                    modality=modality,
                    sop_class_uid=SOP_CLASSES[modality],
                    sop_instance_uid=f"{UID_ROOT}3.{n}.{s_index}.{i}",
                    instance_number=i,
                    acquisition_datetime=f"{study.date}{hour:02d}{i * 10:02d}00",
                    content_time=f"{hour:02d}{i * 10:02d}00",
                )
                ds = _instance_dataset(study, inst)
                ds.file_meta = FileMetaDataset()
                ds.file_meta.MediaStorageSOPClassUID = inst.sop_class_uid
                ds.file_meta.MediaStorageSOPInstanceUID = inst.sop_instance_uid
                ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
                ds.save_as(inst.path, enforce_file_format=True)
                out.instances.append(inst)
    return out


def many_instances(count: int, patient_id: str = "PNGEN-MANY") -> list[Dataset]:
    """``count`` tiny Secondary Capture instances in one series (no pixel data), for tests
    that need many matches; encode them in Explicit VR Little Endian."""
    out = []
    for n in range(1, count + 1):
        ds = Dataset()
        ds.SOPClassUID = SOP_CLASSES["OT"]
        ds.SOPInstanceUID = f"{UID_ROOT}6.1.1.{n}"
        ds.StudyInstanceUID = f"{UID_ROOT}4.1"
        ds.SeriesInstanceUID = f"{UID_ROOT}5.1.1"
        ds.PatientID = patient_id
        ds.PatientName = "Many^Instances"
        ds.StudyDate = "20220202"
        ds.Modality = "OT"
        ds.InstanceNumber = n
        ds.ImageComments = f"instance {n}"
        out.append(ds)
    return out
