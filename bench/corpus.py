"""Deterministic benchmark corpora, written with pydicom in Explicit VR Little Endian.

Kinds, each under OUT/<kind>/ with one folder per study (st0000/im0000.dcm ...) and a
manifest.json describing what the folder holds (the workloads derive queries and expected
counts from it):

  ct     CT Image Storage, 512x512, 16 bits allocated (12 stored), ~0.5 MB each;
         20 studies x 100 instances, 2 studies per patient (10 patients)
  small  Secondary Capture, 64x64, 8 bits, ~5 KB each; same shape
  find   many tiny (8x8) Secondary Capture instances for the C-FIND archive: N instances,
         20 per study, 2 studies per patient, every patient with a distinct last name
  large  one Multi-frame Grayscale Word Secondary Capture instance of a given size

The same arguments always give byte-identical files (UIDs are hashes, noise is seeded), so
a corpus is generated once and reused while its manifest's parameters match.

  python -m bench.corpus --out /tmp/pacsnode-bench/corpus [--smoke] [--kinds ct,small]
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shutil
import struct
import sys
import time

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
SC_IMAGE = "1.2.840.10008.5.1.4.1.1.7"
MF_WORD_SC_IMAGE = "1.2.840.10008.5.1.4.1.1.7.3"
IMPLEMENTATION_UID = "1.2.826.0.1.3680043.10.1471.9.1"  # pacsnode root, branch 9: bench tools

FIRST = ["JOHN", "JANE", "ALEX", "MARIA", "PETER", "ANNA", "LUKAS", "SOFIA", "DAVID", "EMMA", "OMAR", "YUKI"]
# Last names are built from syllables so that each patient has its own: a wildcard query
# "<LAST>*" then matches exactly one patient, at any archive size (up to 24**3 patients).
SYLLABLES = ["BA", "DE", "FI", "GO", "HA", "KE", "LI", "MO", "NA", "PE", "RI", "SO",
             "TA", "VE", "WI", "ZO", "BRU", "CHA", "DRE", "GRO", "KLA", "MAR", "STE", "TRO"]

FULL = {"ct": (20, 100), "small": (20, 100)}
SMOKE = {"ct": (4, 5), "small": (4, 5)}
FIND_PER_STUDY = 20


def uid(*parts: object) -> str:
    """A deterministic UID (2.25 + 128 bits of a hash): the same corpus on every run."""
    digest = hashlib.sha256("/".join(["pacsnode-bench", *map(str, parts)]).encode()).digest()
    return "2.25." + str(int.from_bytes(digest[:16], "big"))


def last_name(p: int) -> str:
    n = len(SYLLABLES)
    return SYLLABLES[p % n] + SYLLABLES[(p // n) % n] + SYLLABLES[(p // n // n) % n]


def patient(kind: str, p: int) -> dict:
    code = {"ct": "BCT", "small": "BSM", "find": "BFD", "large": "BLG"}[kind]
    return {
        "PatientID": f"{code}{p:06d}",
        "PatientName": f"{last_name(p)}^{FIRST[p % len(FIRST)]}",
        "PatientBirthDate": f"{1935 + (p * 7) % 70}{1 + p % 12:02d}{1 + (p * 5) % 28:02d}",
        "PatientSex": "MF"[p % 2],
    }


def study_date(kind: str, s: int, n_studies: int) -> dt.date:
    if kind == "find":
        # Two studies per day (of different patients): a 2-day range matches 4 studies.
        return dt.date(2012, 1, 2) + dt.timedelta(days=s % max(1, n_studies // 2))
    return dt.date(2023, 1, 16) + dt.timedelta(days=37 * s)


def study_header(kind: str, s: int, n_studies: int) -> Dataset:
    """Patient, study and series level attributes shared by every instance of study ``s``."""
    p = s // 2
    date = study_date(kind, s, n_studies)
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    for kw, value in patient(kind, p).items():
        setattr(ds, kw, value)
    ds.IssuerOfPatientID = "GENERAL HOSPITAL"
    ds.PatientAge = f"{min(date.year - int(ds.PatientBirthDate[:4]), 999):03d}Y"
    ds.PatientSize = "1.74"
    ds.PatientWeight = "77"
    ds.StudyInstanceUID = uid(kind, "study", s)
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = date.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = f"{7 + s % 12:02d}{(7 * s) % 60:02d}{(11 * s) % 60:02d}"
    ds.AccessionNumber = f"A{kind[:2].upper()}{s:07d}"
    ds.StudyID = str(s + 1)
    ds.ReferringPhysicianName = "WELBY^MARCUS^^DR"
    ds.InstitutionName = "General Hospital"
    ds.InstitutionalDepartmentName = "Radiology"
    ds.StationName = "CT01" if kind == "ct" else "WKS01"
    ds.Manufacturer = "PACSNODE BENCH"
    ds.ManufacturerModelName = "Synthetic CT 64" if kind == "ct" else "Synthetic Capture"
    ds.SoftwareVersions = "1.0"
    ds.SeriesInstanceUID = uid(kind, "series", s)
    ds.SeriesNumber = 2
    ds.FrameOfReferenceUID = uid(kind, "frame-of-reference", s)
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "HFS"
    if kind == "ct":
        ds.Modality = "CT"
        ds.StudyDescription = "CT CHEST ABDOMEN PELVIS W CONTRAST"
        ds.SeriesDescription = "AXIAL 5.0 SOFT TISSUE"
        ds.BodyPartExamined = "CHEST"
        ds.ProtocolName = "CAP ROUTINE"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.KVP = "120"
        ds.SliceThickness = "5.0"
        ds.ConvolutionKernel = "STANDARD"
        ds.XRayTubeCurrent = 250
        ds.ExposureTime = 500
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        _pixels(ds, 512, 512, 16, 12)
        ds.PixelSpacing = ["0.742188", "0.742188"]
    else:
        ds.Modality = "OT"
        ds.ConversionType = "WSD"
        ds.StudyDescription = "SCREEN CAPTURE" if kind == "small" else "OUTSIDE STUDY IMPORT"
        ds.SeriesDescription = "KEY IMAGES"
        ds.ImageType = ["DERIVED", "SECONDARY"]
        size = 64 if kind == "small" else 8
        _pixels(ds, size, size, 8, 8)
        ds.PixelSpacing = ["0.5", "0.5"]
        ds.WindowCenter = "128"
        ds.WindowWidth = "256"
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    return ds


def _pixels(ds: Dataset, rows: int, cols: int, allocated: int, stored: int) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = allocated, stored, stored - 1
    ds.PixelRepresentation = 0


def set_instance(ds: Dataset, kind: str, s: int, i: int, sop_class: str) -> None:
    """Instance level attributes (the study header ``ds`` is reused: pydicom saves it as is)."""
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = uid(kind, "instance", s, i)
    ds.InstanceNumber = i + 1
    ds.AcquisitionNumber = 1
    ds.InstanceCreationDate = ds.StudyDate
    ds.InstanceCreationTime = ds.ContentTime = ds.AcquisitionTime = f"{ds.StudyTime}.{i:06d}"
    z = -250.0 + 5.0 * i
    ds.ImagePositionPatient = ["-190.0", "-190.0", f"{z:.2f}"]
    ds.SliceLocation = f"{z:.2f}"


def file_meta(ds: Dataset) -> FileMetaDataset:
    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = ds.SOPClassUID
    fm.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    fm.ImplementationClassUID = IMPLEMENTATION_UID
    fm.ImplementationVersionName = "PACSNODE_BENCH"
    return fm


def phantom(rows: int, cols: int) -> np.ndarray:
    """A body-like ellipse with a bone and a lung insert (stored values, intercept -1024)."""
    yy, xx = np.mgrid[0:rows, 0:cols]
    img = np.zeros((rows, cols), np.float32)
    img[np.hypot((yy - rows / 2) / (rows * 0.42), (xx - cols / 2) / (cols * 0.36)) < 1] = 1064
    img[np.hypot((yy - rows * 0.45) / (rows * 0.08), (xx - cols * 0.35) / (cols * 0.08)) < 1] = 1724
    img[np.hypot((yy - rows * 0.55) / (rows * 0.12), (xx - cols * 0.65) / (cols * 0.10)) < 1] = 224
    return img


def write_series_kind(root: str, kind: str, n_studies: int, per_study: int) -> dict:
    """ct, small or find: ``n_studies`` folders of ``per_study`` instances."""
    rng = np.random.default_rng(20240229)
    base = phantom(512, 512) if kind == "ct" else None
    sop_class = CT_IMAGE if kind == "ct" else SC_IMAGE
    studies = []
    for s in range(n_studies):
        folder = os.path.join(root, f"st{s:04d}")
        os.makedirs(folder)
        ds = study_header(kind, s, n_studies)
        nbytes = 0
        for i in range(per_study):
            set_instance(ds, kind, s, i, sop_class)
            if kind == "ct":
                scale = 1.0 - 0.4 * abs(i - per_study / 2) / per_study
                ds.PixelData = np.clip(base * scale + rng.normal(0, 12, base.shape), 0, 4095).astype("<u2").tobytes()
            else:
                ds.PixelData = rng.integers(0, 256, ds.Rows * ds.Columns, dtype=np.uint8).tobytes()
            ds.file_meta = file_meta(ds)
            path = os.path.join(folder, f"im{i:04d}.dcm")
            ds.save_as(path, enforce_file_format=True)
            nbytes += os.path.getsize(path)
        studies.append({
            "dir": os.path.basename(folder), "patient_id": ds.PatientID, "patient_name": str(ds.PatientName),
            "study_uid": ds.StudyInstanceUID, "study_date": ds.StudyDate, "n": per_study, "bytes": nbytes,
        })
    return {"studies": studies}


def write_large(root: str, size_mb: float) -> dict:
    """One multi-frame instance of about ``size_mb`` MB (10^6 bytes), written without ever
    holding the pixel data in memory: pydicom writes the header, then the frames are appended."""
    rows = cols = 512
    frame_bytes = rows * cols * 2
    frames = max(1, round(size_mb * 1e6 / frame_bytes))
    ds = study_header("ct", 0, 1)
    for kw in ("KVP", "SliceThickness", "ConvolutionKernel", "XRayTubeCurrent", "ExposureTime", "RescaleType"):
        delattr(ds, kw)
    ds.PatientID, ds.PatientName = patient("large", 0)["PatientID"], patient("large", 0)["PatientName"]
    ds.StudyInstanceUID = uid("large", "study", size_mb)
    ds.SeriesInstanceUID = uid("large", "series", size_mb)
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    ds.StudyDescription = "LARGE MULTI-FRAME TRANSFER TEST"
    set_instance(ds, "large", size_mb, 0, MF_WORD_SC_IMAGE)
    ds.NumberOfFrames = frames
    ds.FrameTime = "40"
    ds.FrameIncrementPointer = 0x00181063  # Frame Time
    ds.file_meta = file_meta(ds)
    folder = os.path.join(root, "st0000")
    os.makedirs(folder)
    path = os.path.join(folder, "im0000.dcm")
    ds.save_as(path, enforce_file_format=True)
    base = phantom(rows, cols).astype("<u2")
    with open(path, "ab") as fh:
        # (7FE0,0010) OW with an explicit 32-bit length, then the frames one by one.
        fh.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, frames * frame_bytes))
        for f in range(frames):
            fh.write((base + np.uint16(f % 256)).tobytes())
    return {"studies": [{"dir": "st0000", "patient_id": ds.PatientID, "patient_name": str(ds.PatientName),
                         "study_uid": ds.StudyInstanceUID, "study_date": ds.StudyDate, "n": 1,
                         "bytes": os.path.getsize(path)}], "frames": frames}


def ensure(out: str, kind: str, **params) -> dict:
    """The manifest of ``out/kind``, generating the corpus first unless it already matches."""
    root = os.path.join(out, kind)
    manifest_path = os.path.join(root, "manifest.json")
    if os.path.exists(manifest_path):
        with open(manifest_path) as fh:
            manifest = json.load(fh)
        if manifest.get("params") == params:
            manifest["root"] = root
            return manifest
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    t0 = time.perf_counter()
    if kind == "large":
        body = write_large(root, params["size_mb"])
    else:
        body = write_series_kind(root, kind, params["n_studies"], params["per_study"])
    manifest = {
        "kind": kind, "params": params, **body,
        "n_instances": sum(s["n"] for s in body["studies"]),
        "bytes": sum(s["bytes"] for s in body["studies"]),
        "generated_in_s": round(time.perf_counter() - t0, 1),
    }
    # Written last: an interrupted generation leaves no manifest and is redone next time.
    with open(manifest_path, "w") as fh:
        json.dump(manifest, fh, indent=1)
    manifest["root"] = root
    return manifest


def shapes(smoke: bool, find_size: int, large_mb: float) -> dict[str, dict]:
    """Generation parameters of every kind for a full or a smoke run."""
    table = SMOKE if smoke else FULL
    find_studies = max(2, find_size // FIND_PER_STUDY)
    return {
        "ct": {"n_studies": table["ct"][0], "per_study": table["ct"][1]},
        "small": {"n_studies": table["small"][0], "per_study": table["small"][1]},
        "find": {"n_studies": find_studies, "per_study": FIND_PER_STUDY},
        "large": {"size_mb": large_mb},
    }


def study_dirs(manifest: dict) -> list[str]:
    return [os.path.join(manifest["root"], s["dir"]) for s in manifest["studies"]]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/pacsnode-bench/corpus")
    ap.add_argument("--smoke", action="store_true", help="tiny corpora (CI)")
    ap.add_argument("--kinds", default="ct,small,find,large")
    ap.add_argument("--find-size", type=int, help="instances in the find corpus (default 100000, smoke 200)")
    ap.add_argument("--large-mb", type=float, default=None, help="size of the large instance (default 200, smoke 8)")
    a = ap.parse_args(argv)
    find_size = a.find_size or (200 if a.smoke else 100_000)
    large_mb = a.large_mb or (8 if a.smoke else 200)
    all_shapes = shapes(a.smoke, find_size, large_mb)
    for kind in a.kinds.split(","):
        m = ensure(a.out, kind, **all_shapes[kind])
        print(f"{kind}: {m['n_instances']} instances in {len(m['studies'])} studies, "
              f"{m['bytes'] / 1e6:.1f} MB, {m['root']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
