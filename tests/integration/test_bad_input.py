"""Bad input leaves the archive as it was and the association usable: truncated datasets,
malformed queries, duplicate SOP instances. (An unknown move destination: test_retrieve.)"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.integration.helpers import (
    STUDY_ROOT_FIND,
    STUDY_ROOT_MOVE,
    DicomFile,
    association,
    blob_snapshot,
    describe,
    find_all,
    identifier,
    pynetdicom_store,
    split_part10,
    stored_archive,
    storescu,
)

pytestmark = pytest.mark.integration

NEW_UID = "1.2.826.0.1.3680043.10.1471.999.9.1"


@pytest.fixture
def loaded(node_factory, generated, tmp_path):
    node = node_factory()
    files = [describe(p) for p in generated.paths]
    assert storescu(node.port, files, tmp_path / "load").succeeded() == generated.paths
    return node, files


def state(node) -> tuple[list[str], dict[str, int]]:
    """What a client and the disk see: every SOP Instance UID, every blob file and its size."""
    with association(node) as assoc:
        status, matches = find_all(assoc, identifier("IMAGE", SOPInstanceUID=""))
    assert status == 0x0000
    return sorted(str(m.SOPInstanceUID) for m in matches), blob_snapshot(node)


def variant(f: DicomFile, folder: Path, name: str, **changes) -> DicomFile:
    """A copy of ``f`` with attributes changed (and File Meta to match), as a Part 10 file."""
    ds = dcmread(f.path)
    for kw, value in changes.items():
        setattr(ds, kw, value)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = folder / name
    ds.save_as(path, enforce_file_format=True)
    return describe(path)


def truncated(f: DicomFile, folder: Path, keep: int) -> DicomFile:
    """``f`` with its dataset cut after ``keep`` bytes (the File Meta intact)."""
    data = f.path.read_bytes()
    _, dataset = split_part10(f.path)
    path = folder / f"truncated-{keep}.dcm"
    path.write_bytes(data[: len(data) - len(dataset) + keep])
    return dataclasses.replace(f, path=path)


def test_truncated_dataset_is_refused_and_nothing_is_kept(loaded, tmp_path):
    node, files = loaded
    new = variant(files[0], tmp_path, "new.dcm", SOPInstanceUID=NEW_UID)
    _, dataset = split_part10(new.path)
    name_at = dataset.index(b"Doe^John")
    before = state(node)
    # Cut inside Patient's Name, inside Pixel Data, and inside an element header.
    for keep in (name_at + 3, len(dataset) - 7, len(dataset) - 128 - 10):
        cut = truncated(new, tmp_path, keep)
        outcome = pynetdicom_store(node, [cut])[cut.path]
        assert outcome.startswith("0xC") or outcome == "0xA900", (keep, outcome)
        assert state(node) == before, keep
    # The whole dataset is then accepted: the refusals were about the cut alone.
    assert pynetdicom_store(node, [new])[new.path] == "Success"
    assert NEW_UID in state(node)[0]


# No level, an unknown one, an empty one, and PATIENT (not a level of the Study Root model).
@pytest.mark.parametrize("level", [None, "FOO", "", "PATIENT"])
def test_malformed_find_is_refused_and_the_association_goes_on(loaded, level):
    node, files = loaded
    query = identifier("STUDY", StudyInstanceUID="")
    if level is None:
        del query.QueryRetrieveLevel
    else:
        query.QueryRetrieveLevel = level
    with association(node) as assoc:
        status, matches = find_all(assoc, query, STUDY_ROOT_FIND)
        assert status == 0xA900 or 0xC000 <= status <= 0xCFFF, hex(status)
        assert matches == []
        status, matches = find_all(assoc, identifier("STUDY", StudyInstanceUID=""))
        assert status == 0x0000 and len(matches) == 4


def test_malformed_move_is_refused_and_the_association_goes_on(loaded):
    node, files = loaded
    with association(node, [STUDY_ROOT_MOVE, STUDY_ROOT_FIND]) as assoc:
        bad = identifier("FOO", StudyInstanceUID=files[0].study_uid)
        responses = list(assoc.send_c_move(bad, "ANYWHERE", STUDY_ROOT_MOVE))
        assert len(responses) == 1
        status = responses[0][0].Status
        assert status == 0xA900 or 0xC000 <= status <= 0xCFFF, hex(status)
        status, matches = find_all(assoc, identifier("IMAGE", SOPInstanceUID=""))
        assert status == 0x0000 and len(matches) == len(files)


def test_duplicate_with_identical_content_changes_nothing(loaded, tmp_path):
    node, files = loaded
    before = state(node)
    assert pynetdicom_store(node, files[:3]) == {f.path: "Success" for f in files[:3]}
    report = storescu(node.port, files[3:5], tmp_path / "again")
    assert report.succeeded() == [f.path for f in files[3:5]], report.output
    assert state(node) == before


def test_duplicate_with_other_content_is_refused_and_the_original_kept(loaded, tmp_path):
    node, files = loaded
    original = files[0]
    other = variant(original, tmp_path, "other.dcm", InstanceNumber=99)
    assert other.sop_instance_uid == original.sop_instance_uid
    before = state(node)
    assert pynetdicom_store(node, [other])[other.path] == "0x0111"
    assert state(node) == before
    with association(node) as assoc:
        _, (match,) = find_all(assoc, identifier("IMAGE", SOPInstanceUID=original.sop_instance_uid, InstanceNumber=""))
    assert int(match.InstanceNumber) == 1
    node.stop()
    with stored_archive(node) as archive:
        assert archive.check(original, split_part10(original.path)[1]) == []
