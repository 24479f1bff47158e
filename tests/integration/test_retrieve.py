"""C-MOVE with DCMTK's movescu to DCMTK storescp destinations, and C-GET with getscu.

The node holds the generated set, with two instances of study S4 re-encoded by DCMTK (RLE,
JPEG-LS) so that one study mixes compressed and uncompressed syntaxes.
"""
from __future__ import annotations

import warnings

import numpy as np

import pytest
from pydicom import dcmread

from tests.data_gen import STUDIES
from tests.integration.helpers import (
    STUDY_ROOT_MOVE,
    DicomFile,
    association,
    describe,
    getscu,
    identifier,
    movescu,
    received_by_uid,
    run,
    split_part10,
)
from tests.peers import StoreSCP, dcmtk

pytestmark = pytest.mark.integration

S1, S2, S3, S4 = (s.uid for s in STUDIES)
IMPLICIT_VR_LE = "1.2.840.10008.1.2"


@pytest.fixture(scope="module")
def archive(load_node, generated, tmp_path_factory):
    """(node, destinations, files stored): ALL accepts every syntax and writes what it
    receives bit for bit; IMPLICIT accepts Implicit VR Little Endian only; DOWN is known to
    the node but never started."""
    folder = tmp_path_factory.mktemp("destinations")
    destinations = {
        "ALL": StoreSCP(folder / "all", ["+xa", "+B"], ae_title="ALL"),
        "IMPLICIT": StoreSCP(folder / "implicit", ["+xi", "+B"], ae_title="IMPLICIT"),
        "DOWN": StoreSCP(folder / "down", ae_title="DOWN"),
    }
    encoded = {}
    for inst, (program, *options) in zip(generated.of_study("S4")[1:], (["dcmcrle"], ["dcmcjpls", "+el"])):
        out = folder / f"{inst.path.stem}-{program}.dcm"
        proc = run([dcmtk(program), *options, "+un", str(inst.path), str(out)])
        assert proc.returncode == 0, proc.stdout
        encoded[inst.path] = out
    files = [describe(encoded.get(p, p)) for p in generated.paths]
    assert {f.transfer_syntax for f in files if f.study_uid == S4} == {"1.2.840.10008.1.2.1", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.80"}
    node, report = load_node(files, remotes={aet: scp.port for aet, scp in destinations.items()})
    assert len(report.succeeded()) == len(files), report.output
    yield node, destinations, files
    for scp in destinations.values():
        scp.stop()


@pytest.fixture
def destination(archive):
    """Start a destination for one test, with an empty folder."""
    started = []

    def start(aet: str) -> StoreSCP:
        scp = archive[1][aet]
        scp.folder.mkdir(parents=True, exist_ok=True)
        scp.clear()
        started.append(scp.start())
        return scp

    yield start
    for scp in started:
        scp.stop()


def of_study(files: list[DicomFile], study_uid: str) -> list[DicomFile]:
    return [f for f in files if f.study_uid == study_uid]


def assert_same_bytes(received: dict, files: list[DicomFile]) -> None:
    """Every file arrived, dataset bytes identical to the file first sent, in its syntax."""
    assert sorted(received) == sorted(f.sop_instance_uid for f in files)
    for f in files:
        meta, data = split_part10(received[f.sop_instance_uid])
        assert str(meta.TransferSyntaxUID) == f.transfer_syntax, f.name
        assert data == split_part10(f.path)[1], f.name


def test_movescu_study(archive, destination):
    node, _, files = archive
    scp = destination("ALL")
    result = movescu(node, "ALL", {"StudyInstanceUID": S1})
    assert result.returncode == 0, result.output
    assert result.final == {"status": 0, "completed": 5, "failed": 0, "warning": 0}
    assert_same_bytes(received_by_uid(scp.folder), of_study(files, S1))


def test_movescu_compressed_and_uncompressed_study_bit_for_bit(archive, destination):
    node, _, files = archive
    scp = destination("ALL")
    result = movescu(node, "ALL", {"StudyInstanceUID": S4})
    assert result.final == {"status": 0, "completed": 3, "failed": 0, "warning": 0}, result.output
    assert_same_bytes(received_by_uid(scp.folder), of_study(files, S4))


def test_movescu_instances_by_uid_list(archive, destination):
    node, _, files = archive
    scp = destination("ALL")
    wanted = [of_study(files, S1)[0], of_study(files, S1)[3]]  # one of each S1 series
    keys = {"StudyInstanceUID": S1, "SOPInstanceUID": "\\".join(f.sop_instance_uid for f in wanted)}
    result = movescu(node, "ALL", keys, level="IMAGE")
    assert result.final == {"status": 0, "completed": 2, "failed": 0, "warning": 0}, result.output
    assert_same_bytes(received_by_uid(scp.folder), wanted)


def test_move_to_unknown_destination(archive):
    node, _, _ = archive
    result = movescu(node, "NOWHERE", {"StudyInstanceUID": S1})
    assert result.final.get("status") == 0xA801, result.output
    with association(node, [STUDY_ROOT_MOVE]) as assoc:
        responses = list(assoc.send_c_move(identifier("STUDY", StudyInstanceUID=S1), "NOWHERE", STUDY_ROOT_MOVE))
    assert [status.Status for status, _ in responses] == [0xA801]


def test_move_to_a_destination_that_is_down(archive):
    """Every sub-operation fails (none is a warning), and each instance is listed."""
    node, _, files = archive
    study = sorted(f.sop_instance_uid for f in of_study(files, S2))
    with association(node, [STUDY_ROOT_MOVE]) as assoc:
        responses = list(assoc.send_c_move(identifier("STUDY", StudyInstanceUID=S2), "DOWN", STUDY_ROOT_MOVE))
    status, ident = responses[-1]
    assert 0xA700 <= status.Status <= 0xA7FF or 0xC000 <= status.Status <= 0xCFFF, hex(status.Status)
    assert (status.NumberOfCompletedSuboperations, status.NumberOfFailedSuboperations, status.NumberOfWarningSuboperations) == (0, 2, 0)
    assert sorted(ident.FailedSOPInstanceUIDList) == study


def test_move_to_a_destination_without_compressed_syntaxes(archive, destination):
    """IMPLICIT takes Implicit VR Little Endian only: the Explicit VR instance is converted,
    the RLE and JPEG-LS ones are decoded by the pixel pipeline; every other attribute and
    the pixels themselves stay what they were."""
    node, _, files = archive
    scp = destination("IMPLICIT")
    study = of_study(files, S4)
    assert {f.transfer_syntax for f in study} > {"1.2.840.10008.1.2.1"}, "the study must hold compressed instances"
    with association(node, [STUDY_ROOT_MOVE]) as assoc:
        responses = list(assoc.send_c_move(identifier("STUDY", StudyInstanceUID=S4), "IMPLICIT", STUDY_ROOT_MOVE))
    status, ident = responses[-1]
    assert status.Status == 0x0000, status
    assert (status.NumberOfCompletedSuboperations, status.NumberOfFailedSuboperations, status.NumberOfWarningSuboperations) == (len(study), 0, 0)

    received = received_by_uid(scp.folder)
    assert sorted(received) == sorted(f.sop_instance_uid for f in study)
    for f in study:
        meta, _ = split_part10(received[f.sop_instance_uid])
        assert str(meta.TransferSyntaxUID) == IMPLICIT_VR_LE
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got, original = dcmread(received[f.sop_instance_uid]), dcmread(f.path)
        assert np.array_equal(got.pixel_array, original.pixel_array), f.name
        skip = {0x7FE00010}
        assert [(e.tag, e.value) for e in got if e.tag not in skip] == [(e.tag, e.value) for e in original if e.tag not in skip]

    # movescu sees the same outcome.
    scp.clear()
    result = movescu(node, "IMPLICIT", {"StudyInstanceUID": S4})
    assert result.final == {"status": 0x0000, "completed": len(study), "failed": 0, "warning": 0}, result.output


def test_getscu_series(archive, tmp_path):
    node, _, files = archive
    series = [f for f in of_study(files, S1) if f.series_uid.endswith(".1")]
    assert len(series) == 3
    result = getscu(node, {"StudyInstanceUID": S1, "SeriesInstanceUID": series[0].series_uid}, "SERIES", tmp_path)
    assert result.returncode == 0, result.output
    assert result.final == {"status": 0, "completed": 3, "failed": 0, "warning": 0, "remaining": 0}
    assert_same_bytes(received_by_uid(tmp_path), series)


def test_getscu_study(archive, tmp_path):
    node, _, files = archive
    result = getscu(node, {"StudyInstanceUID": S3}, "STUDY", tmp_path)
    assert result.final == {"status": 0, "completed": 3, "failed": 0, "warning": 0, "remaining": 0}, result.output
    assert_same_bytes(received_by_uid(tmp_path), of_study(files, S3))
