"""STOW-RS: stored through the C-STORE ingest path, durable before the answer, and bad
input refused with the right status without anything half stored."""
from __future__ import annotations

import copy
import io

import pytest
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from tests.integration.helpers import association, blob_snapshot, find_all, identifier, split_part10, stored_archive
from tests.web import helpers as h
from tests.web.conftest import start_web_node

pytestmark = pytest.mark.integration
OCTET = "application/octet-stream"


def _copy(source: str, **changes) -> Dataset:
    ds = dcmread(get_testdata_file(source))
    ds = copy.deepcopy(ds)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for kw, value in changes.items():
        setattr(ds, kw, value)
    return ds


def _bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.fixture(scope="module")
def stow_node(tmp_path_factory):
    node, http_port = start_web_node(tmp_path_factory.mktemp("stow") / "node")
    try:
        yield node, f"http://127.0.0.1:{http_port}/dicom-web"
    finally:
        if node.proc is not None:
            node.stop()


def test_stow_with_dicomweb_client_then_cfind_and_wado(stow_node):
    from dicomweb_client import DICOMwebClient

    node, url = stow_node
    study = generate_uid()
    datasets = [_copy("CT_small.dcm", StudyInstanceUID=study), _copy("JPEG2000.dcm", StudyInstanceUID=study)]
    response = DICOMwebClient(url).store_instances(datasets)
    refs = response.ReferencedSOPSequence
    assert sorted(r.ReferencedSOPInstanceUID for r in refs) == sorted(d.SOPInstanceUID for d in datasets)
    assert "FailedSOPSequence" not in response
    assert response.RetrieveURL == f"{url}/studies/{study}"
    # The same index as C-FIND ...
    with association(node) as assoc:
        status, found = find_all(assoc, identifier("IMAGE", StudyInstanceUID=study, SOPInstanceUID=""))
    assert status == 0 and sorted(str(m.SOPInstanceUID) for m in found) == sorted(d.SOPInstanceUID for d in datasets)
    # ... and the bytes sent are the bytes kept.
    for ds, ref in zip(datasets, sorted(refs, key=lambda r: [d.SOPInstanceUID for d in datasets].index(r.ReferencedSOPInstanceUID))):
        rsp = h.get(ref.RetrieveURL, accept='multipart/related; type="application/dicom"; transfer-syntax=*')
        ((_, data),) = h.parts(rsp)
        assert split_part10(data)[1] == split_part10(_bytes(ds))[1]


def test_stow_is_durable_and_study_scoped(stow_node, tmp_path):
    node, url = stow_node
    study = generate_uid()
    ds = _copy("MR_small.dcm", StudyInstanceUID=study)
    other = _copy("MR_small.dcm")  # another study: refused by the study-scoped request
    rsp = h.post_stow(f"{url}/studies/{study}", [("application/dicom", _bytes(ds)), ("application/dicom", _bytes(other))])
    assert rsp.status_code == 202, rsp.text
    body = Dataset.from_json(rsp.json())
    assert [r.ReferencedSOPInstanceUID for r in body.ReferencedSOPSequence] == [ds.SOPInstanceUID]
    assert [(f.ReferencedSOPInstanceUID, f.FailureReason) for f in body.FailedSOPSequence] == [(other.SOPInstanceUID, 0xA900)]
    # Durable: the node stopped right after the answer holds the instance, and only it.
    node.stop()
    try:
        with stored_archive(node) as archive:
            record = archive.index.get_instance(ds.SOPInstanceUID)
            assert record is not None and record.study_uid == study
            assert split_part10(archive.blobs.read(record.blob_id))[1] == split_part10(_bytes(ds))[1]
            assert archive.index.get_instance(other.SOPInstanceUID) is None
    finally:
        node.start()


def test_stow_bad_input(stow_node):
    node, url = stow_node
    good = _bytes(_copy("CT_small.dcm"))
    before = blob_snapshot(node)
    body, boundary = h.multipart_body([("application/dicom", good)])
    ctype = f'multipart/related; type="application/dicom"; boundary={boundary}'
    # Malformed multipart: truncated, no closing boundary, wrong boundary, garbage.
    for bad in (body[: len(body) // 2], body[:-4], body.replace(boundary.encode(), b"x" * len(boundary)), b"garbage"):
        assert h.post_stow(url + "/studies", [], ctype=ctype, body=bad).status_code == 400
    assert h.post_stow(url + "/studies", [], ctype="multipart/related; type=\"application/dicom\"", body=body).status_code == 400
    # Not multipart, or parts of a type we do not take.
    assert h.post_stow(url + "/studies", [], ctype="application/dicom", body=good).status_code == 415
    assert h.post_stow(url + "/studies", [], ctype=f'multipart/related; type="application/dicom+json"; boundary={boundary}', body=body).status_code == 415
    # Unacceptable answer type.
    rsp = h.requests.post(url + "/studies", data=body, headers={"Content-Type": ctype, "Accept": "application/dicom+xml"}, timeout=30)
    assert rsp.status_code == 406
    assert blob_snapshot(node) == before, "a refused request wrote something"
    # Every part bad: 409 with the reasons; nothing stored.
    truncated = good[: len(good) - 5000]
    rsp = h.post_stow(url + "/studies", [("application/dicom", b"not DICOM at all"), (OCTET, good), ("application/dicom", truncated)])
    assert rsp.status_code == 409, rsp.text
    reasons = [f.FailureReason for f in Dataset.from_json(rsp.json()).FailedSOPSequence]
    assert reasons == [0xC000, 0xC000, 0xC000]
    assert blob_snapshot(node) == before, "a failed instance was half stored"
    # One good part among bad ones: 202, the good one stored.
    rsp = h.post_stow(url + "/studies", [("application/dicom", b"\x00" * 200), ("application/dicom", good)])
    assert rsp.status_code == 202
    body = Dataset.from_json(rsp.json())
    assert len(body.ReferencedSOPSequence) == 1 and len(body.FailedSOPSequence) == 1
    # The same instance again is a success that changes nothing; other content under its UID is refused.
    assert h.post_stow(url + "/studies", [("application/dicom", good)]).status_code == 200
    changed = dcmread(io.BytesIO(good))
    changed.PatientName = "Other^Content"
    rsp = h.post_stow(url + "/studies", [("application/dicom", _bytes(changed))])
    assert rsp.status_code == 409 and Dataset.from_json(rsp.json()).FailedSOPSequence[0].FailureReason == 0x0111
