"""`pacsnode import`: folders and DICOMDIRs through the normal ingest path."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from pacsnode.config import NodeConfig
from pacsnode.services.archive import Archive
from pacsnode.services.bulk_import import run_import

DICOMDIR_FOLDER = Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests"


def _listed(dicomdir: Path) -> list[Path]:
    records = pydicom.dcmread(dicomdir).DirectoryRecordSequence
    return [dicomdir.parent.joinpath(*r.ReferencedFileID) for r in records if r.get("ReferencedFileID")]


@pytest.fixture
def archive(tmp_path):
    archive = Archive.open(NodeConfig(data=tmp_path / "data", index_map_size=1 << 28))
    yield archive
    archive.close()


def test_dicomdir_imports_the_files_it_lists(archive):
    listed = _listed(DICOMDIR_FOLDER / "DICOMDIR")
    summary = run_import(archive, [DICOMDIR_FOLDER / "DICOMDIR"], jobs=4)
    assert summary.counts["stored"] == len(listed) > 10
    uids = [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in listed]
    assert set(archive.index.get_instances(uids)) == set(uids)


def test_folder_import_counts_and_reasons(archive, tmp_path):
    folder = tmp_path / "in"
    shutil.copytree(DICOMDIR_FOLDER / "77654033", folder / "a")
    (folder / "notes.txt").write_text("not dicom")
    first = run_import(archive, [folder], jobs=4)
    n_files = sum(1 for p in (folder / "a").rglob("*") if p.is_file())
    assert first.counts["stored"] == n_files > 0
    assert first.rejected == [(str(folder / "notes.txt"), "not a DICOM Part 10 file (no File Meta Information)")]
    again = run_import(archive, [folder], jobs=4)
    assert again.counts["duplicate"] == n_files and again.counts["stored"] == 0


def test_cli_import_prints_a_summary(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.run(
        [sys.executable, "-m", "pacsnode.cli", "import", "--data", str(tmp_path / "d"), str(DICOMDIR_FOLDER / "DICOMDIR")],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"stored {len(_listed(DICOMDIR_FOLDER / 'DICOMDIR'))}," in proc.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "pacsnode.cli", "import", "--data", str(tmp_path / "d"), str(tmp_path / "nope")],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr
