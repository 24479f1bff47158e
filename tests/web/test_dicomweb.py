"""Every DICOMweb endpoint with dicomweb-client against a node loaded by C-STORE: the same
instances, attributes and pixels as C-STORE stored and C-FIND finds."""
from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from pydicom import Dataset, dcmread
from pydicom.encaps import generate_frames

from tests.integration.helpers import association, find_all, identifier, split_part10
from tests.web import helpers as h

pytestmark = pytest.mark.integration

NATIVE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"}
S1 = "1.2.826.0.1.3680043.10.1471.999.1.1"


def _value(obj: dict, tag: str):
    values = obj.get(tag, {}).get("Value")
    return values[0] if values else None


def _read(path) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dcmread(path)


def _corrected(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    """pydicom's unused-high-bits correction, applied to a raw native frame."""
    allocated, stored = int(ds.BitsAllocated), int(ds.BitsStored)
    if stored >= allocated:
        return arr
    shift = allocated - stored
    return (arr << shift) >> shift


def m_rows(web_node, sop_uid: str) -> int:
    return int(_read(next(f.path for f in web_node.files if f.sop_instance_uid == sop_uid)).Rows)


# -- QIDO-RS ------------------------------------------------------------------------------


STUDY_QUERIES = [
    {},
    {"PatientName": "doe*"},
    {"PatientName": "DOE^JOHN"},
    {"StudyDate": "20200101-20201231"},
    {"StudyDate": "-20200131"},
    {"ModalitiesInStudy": "MR"},
    {"AccessionNumber": "ACC-1001"},
    {"PatientID": "PNGEN-1"},
    {"StudyTime": "080000-100000"},
    {"StudyInstanceUID": f"{S1}\\1.2.826.0.1.3680043.10.1471.999.1.3"},
]


@pytest.mark.parametrize("query", STUDY_QUERIES, ids=lambda q: ",".join(f"{k}={v}" for k, v in q.items()) or "all")
def test_qido_studies_match_cfind(web_node, query):
    client = web_node.client()
    got = client.search_for_studies(search_filters=query)
    with association(web_node.node) as assoc:
        keys = {"StudyInstanceUID": "", "PatientName": "", "StudyDate": "", "NumberOfStudyRelatedInstances": "", "ModalitiesInStudy": ""}
        status, matches = find_all(assoc, identifier("STUDY", **{**keys, **query}))
    assert status == 0
    expected = {str(m.StudyInstanceUID): m for m in matches}
    assert sorted(_value(r, "0020000D") for r in got) == sorted(expected)
    for r in got:
        m = expected[_value(r, "0020000D")]
        ds = Dataset.from_json(r)
        assert ds.PatientName == m.PatientName
        assert ds.get("ModalitiesInStudy") == (m.ModalitiesInStudy or None)
        assert _value(r, "00080020") == (m.StudyDate or None)
        assert _value(r, "00201208") == int(m.NumberOfStudyRelatedInstances)
        assert _value(r, "00081190") == f"{web_node.url}/studies/{m.StudyInstanceUID}"


def test_qido_series_and_instances_match_cfind(web_node, generated):
    client = web_node.client()
    for study in ("S1", "S3"):
        uid = generated.study(study).uid
        series = client.search_for_series(uid)
        assert sorted(_value(s, "0020000E") for s in series) == sorted(generated.series_uids(study))
        with association(web_node.node) as assoc:
            _, found = find_all(assoc, identifier("SERIES", StudyInstanceUID=uid, SeriesInstanceUID="", Modality="", NumberOfSeriesRelatedInstances=""))
        by_uid = {str(m.SeriesInstanceUID): m for m in found}
        for s in series:
            m = by_uid[_value(s, "0020000E")]
            assert _value(s, "00080060") == m.Modality
            assert _value(s, "00201209") == int(m.NumberOfSeriesRelatedInstances)
            instances = client.search_for_instances(uid, _value(s, "0020000E"))
            assert sorted(_value(i, "00080018") for i in instances) == sorted(
                f.sop_instance_uid for f in web_node.files if f.series_uid == _value(s, "0020000E")
            )
            for i in instances:
                assert _value(i, "00280010") == m_rows(web_node, _value(i, "00080018"))
                assert _value(i, "00081190").endswith(f"/instances/{_value(i, '00080018')}")


def test_qido_cross_level_and_controls(web_node, generated):
    client = web_node.client()
    ct_series = client.search_for_series(search_filters={"Modality": "MR", "PatientID": "PNGEN-1"})
    assert {_value(s, "0020000D") for s in ct_series} == {generated.study("S2").uid}
    # Unscoped series searches also return the study's attributes.
    assert all(_value(s, "00100020") == "PNGEN-1" for s in ct_series)
    instances = client.search_for_instances(search_filters={"SOPClassUID": "1.2.840.10008.5.1.4.1.1.7"})
    ot = {i.sop_instance_uid for i in generated.instances if i.modality == "OT"}
    assert ot <= {_value(i, "00080018") for i in instances}
    in_study = client.search_for_instances(generated.study("S3").uid)
    assert len(in_study) == 3
    # limit / offset page through the same order.
    everything = [_value(r, "0020000D") for r in client.search_for_studies()]
    pages = [_value(r, "0020000D") for off in range(0, len(everything), 2) for r in client.search_for_studies(limit=2, offset=off)]
    assert pages == everything
    assert client.search_for_studies(offset=len(everything)) == []
    # includefield: named attributes and 'all'.
    studies = client.search_for_studies(search_filters={"StudyInstanceUID": S1}, fields=["PatientBirthDate", "00101010"])
    assert _value(studies[0], "00100030") == "19700101" and "00101010" in studies[0]
    everything_s1 = h.get(f"{web_node.url}/studies", StudyInstanceUID=S1, includefield="all").json()[0]
    assert _value(everything_s1, "00081030") == "CT chest" and _value(everything_s1, "00201200") == 2
    # fuzzymatching: the value starts any name component, case-insensitively.
    fuzzy = client.search_for_studies(search_filters={"PatientName": "jo"}, fuzzymatching=True)
    assert {_value(r, "0020000D") for r in fuzzy} == {generated.study("S1").uid, generated.study("S2").uid}
    assert client.search_for_studies(search_filters={"PatientName": "jo"}) == []
    # A key the index does not hold is read from the stored file, as C-FIND does.
    ct = web_node.file("CT_small.dcm")
    inst = client.search_for_instances(ct.study_uid, ct.series_uid, fields=["SliceThickness"])
    assert float(_value(inst[0], "00180050")) == float(_read(ct.path).SliceThickness)


def test_qido_errors(web_node):
    assert h.get(f"{web_node.url}/studies", limit="x").status_code == 400
    assert h.get(f"{web_node.url}/studies", NoSuchKeyword="1").status_code == 400
    assert h.get(f"{web_node.url}/studies", includefield="NotAKeyword").status_code == 400
    assert h.get(f"{web_node.url}/studies", accept="application/dicom+xml").status_code == 406
    assert h.get(f"{web_node.url}/studies/1.2.3.4/series").json() == []


# -- WADO-RS ------------------------------------------------------------------------------


def test_retrieve_study_series_instance_as_stored(web_node, generated):
    """transfer-syntax=*: every instance comes back byte for byte as C-STORE stored it."""
    url = web_node.url
    study_files = [f for f in web_node.files if f.study_uid == S1]
    rsp = h.get(f"{url}/studies/{S1}", accept='multipart/related; type="application/dicom"; transfer-syntax=*')
    assert rsp.status_code == 200
    got = {}
    for ctype, data in h.parts(rsp):
        meta, dataset = split_part10(data)
        got[str(meta.MediaStorageSOPInstanceUID)] = (ctype, dataset)
    assert sorted(got) == sorted(f.sop_instance_uid for f in study_files)
    for f in web_node.files:
        rsp = h.get(f"{url}/studies/{f.study_uid}/series/{f.series_uid}/instances/{f.sop_instance_uid}",
                    accept='multipart/related; type="application/dicom"; transfer-syntax=*')  # fmt: skip
        ((ctype, data),) = h.parts(rsp)
        meta, dataset = split_part10(data)
        assert ctype == f"application/dicom; transfer-syntax={f.transfer_syntax}"
        assert str(meta.TransferSyntaxUID) == f.transfer_syntax
        assert dataset == split_part10(f.path)[1], f.name
    client = web_node.client()
    series_uid = generated.series_uids("S1")[0]
    series = client.retrieve_series(S1, series_uid, media_types=(("application/dicom", "*"),))
    assert sorted(str(ds.SOPInstanceUID) for ds in series) == sorted(f.sop_instance_uid for f in web_node.files if f.series_uid == series_uid)


def test_retrieve_default_is_explicit_little_endian_with_same_pixels(web_node):
    client = web_node.client()
    for f in web_node.files:
        got = client.retrieve_instance(f.study_uid, f.series_uid, f.sop_instance_uid, media_types=("application/dicom",))
        assert str(got.file_meta.TransferSyntaxUID) == "1.2.840.10008.1.2.1", f.name
        original = _read(f.path)
        for kw in ("SOPInstanceUID", "PatientID", "StudyInstanceUID", "Rows", "Columns", "InstanceNumber"):
            assert got.get(kw) == original.get(kw), (f.name, kw)
        if "PixelData" in original:
            assert np.array_equal(got.pixel_array, original.pixel_array), f.name


def test_metadata_has_every_attribute_and_bulk_data(web_node):
    client = web_node.client()
    for f in web_node.files:
        meta = client.retrieve_instance_metadata(f.study_uid, f.series_uid, f.sop_instance_uid)
        original = _read(f.path)
        expected = {f"{e.tag:08X}" for e in original if e.tag != 0xFFFCFFFC}  # padding is not sent
        assert expected <= set(meta), (f.name, expected - set(meta))
        assert meta["00083002"]["Value"] == [f.transfer_syntax]
        ds = Dataset.from_json(meta, bulk_data_uri_handler=lambda tag, vr, uri: b"")
        for elem in original:
            if elem.VR in ("OB", "OW", "OF", "OD", "OL", "OV", "UN", "SQ") or elem.tag == 0x7FE00010:
                continue
            assert ds[elem.tag].value == elem.value, (f.name, elem.keyword)
        if "PixelData" in original:
            uri = meta["7FE00010"]["BulkDataURI"]
            assert uri.endswith(f"/instances/{f.sop_instance_uid}/bulkdata/7FE00010")
            rsp = h.get(uri, accept='multipart/related; type="application/octet-stream"; transfer-syntax=*')
            assert rsp.status_code == 200 and len(h.parts(rsp)) == int(original.get("NumberOfFrames", 1) or 1)
    series = client.retrieve_study_metadata(S1)
    assert len(series) == len([f for f in web_node.files if f.study_uid == S1]) and all("7FE00010" in m for m in series)


def test_bulkdata_of_other_values(web_node):
    f = web_node.file("CT_small.dcm")
    meta = h.get(f"{web_node.url}/studies/{f.study_uid}/series/{f.series_uid}/instances/{f.sop_instance_uid}/metadata").json()[0]
    bulk = [(tag, v["BulkDataURI"]) for tag, v in meta.items() if "BulkDataURI" in v and tag != "7FE00010"]
    original = _read(f.path)
    for tag, uri in bulk:
        ((_, data),) = h.parts(h.get(uri, accept='multipart/related; type="application/octet-stream"'))
        assert data == original[int(tag, 16)].value


def test_frames_uncompressed_match_pydicom(web_node):
    """Frames asked as application/octet-stream: decoded (native pixel path) where stored
    compressed, equal to pydicom's pixel_array of what C-STORE stored."""
    client = web_node.client()
    checked = 0
    for f in web_node.files:
        original = _read(f.path)
        if "PixelData" not in original or int(original.BitsAllocated) == 1:
            continue
        frames = h.frames_of(original.pixel_array, original)
        numbers = list(range(1, len(frames) + 1))[:4]
        got = client.retrieve_instance_frames(
            f.study_uid, f.series_uid, f.sop_instance_uid, numbers, media_types=("application/octet-stream",)
        )
        assert len(got) == len(numbers)
        for n, data in zip(numbers, got):
            arr = h.frame_array(data, original)
            if f.transfer_syntax in NATIVE:
                arr = _corrected(arr, original)
            assert np.array_equal(arr, frames[n - 1]), (f.name, n)
        checked += 1
    assert checked >= 15


def test_frames_as_stored_when_accepted(web_node):
    for f in web_node.files:
        if f.transfer_syntax in NATIVE:
            continue
        original = _read(f.path)
        n = int(original.get("NumberOfFrames", 1) or 1)
        encoded = list(generate_frames(original.PixelData, number_of_frames=n))
        base = f"{web_node.url}/studies/{f.study_uid}/series/{f.series_uid}/instances/{f.sop_instance_uid}"
        # What OHIF asks: octet-stream, any syntax; the part says which one it is.
        rsp = h.get(f"{base}/frames/1,{n}", accept="multipart/related; type=application/octet-stream; transfer-syntax=*")
        got = h.parts(rsp)
        assert [d for _, d in got] == [encoded[0], encoded[n - 1]], f.name
        assert got[0][0] == f"application/octet-stream; transfer-syntax={f.transfer_syntax}"
        # Its own media type and syntax.
        client = web_node.client()
        from pacsnode.web.media import frame_media_type

        mt = frame_media_type(f.transfer_syntax)
        frames = client.retrieve_instance_frames(f.study_uid, f.series_uid, f.sop_instance_uid, [1], media_types=((mt, f.transfer_syntax),))
        assert frames == [encoded[0]]


def test_rendered_and_thumbnail(web_node):
    from PIL import Image

    client = web_node.client()
    ct = web_node.file("CT_small.dcm")
    original = _read(ct.path)
    jpeg = client.retrieve_instance_rendered(ct.study_uid, ct.series_uid, ct.sop_instance_uid, media_types=("image/jpeg",))
    img = Image.open(io.BytesIO(jpeg))
    assert img.format == "JPEG" and img.size == (original.Columns, original.Rows)
    base = f"{web_node.url}/studies/{ct.study_uid}/series/{ct.series_uid}/instances/{ct.sop_instance_uid}"
    png = h.get(f"{base}/rendered", accept="image/png", viewport="64,32")
    img = Image.open(io.BytesIO(png.content))
    assert png.headers["Content-Type"] == "image/png" and img.format == "PNG" and img.size == (32, 32)
    narrow = np.asarray(Image.open(io.BytesIO(h.get(f"{base}/rendered", accept="image/png", window="100,50").content)))
    wide = np.asarray(Image.open(io.BytesIO(h.get(f"{base}/rendered", accept="image/png", window="100,4000").content)))
    assert narrow.std() > wide.std()  # a narrow window spreads the same values over more grey levels
    low = h.get(f"{base}/rendered", accept="image/jpeg", quality="10").content
    high = h.get(f"{base}/rendered", accept="image/jpeg", quality="95").content
    assert len(low) < len(high)
    rgb = web_node.file("SC_rgb_rle_2frame.dcm")
    frame2 = h.get(f"{web_node.url}/studies/{rgb.study_uid}/series/{rgb.series_uid}/instances/{rgb.sop_instance_uid}/frames/2/rendered", accept="image/png")
    arr = np.asarray(Image.open(io.BytesIO(frame2.content)))
    assert np.array_equal(arr, _read(rgb.path).pixel_array[1])  # PNG is lossless: the RGB frame itself
    for path in (f"/studies/{ct.study_uid}", f"/studies/{ct.study_uid}/series/{ct.series_uid}", base[len(web_node.url):]):
        thumb = h.get(f"{web_node.url}{path}/thumbnail", accept="image/jpeg")
        assert thumb.status_code == 200 and max(Image.open(io.BytesIO(thumb.content)).size) == 128


def test_wado_uri(web_node):
    root = web_node.url.rsplit("/dicom-web", 1)[0]
    for f in (web_node.file("CT_small.dcm"), web_node.file("JPEG2000.dcm")):
        params = dict(requestType="WADO", studyUID=f.study_uid, seriesUID=f.series_uid, objectUID=f.sop_instance_uid)
        stored = h.get(f"{root}/wado", contentType="application/dicom", transferSyntax="*", **params)
        assert stored.headers["Content-Type"] == "application/dicom"
        assert split_part10(stored.content)[1] == split_part10(f.path)[1]
        explicit = dcmread(io.BytesIO(h.get(f"{root}/wado", contentType="application/dicom", **params).content))
        assert str(explicit.file_meta.TransferSyntaxUID) == "1.2.840.10008.1.2.1"
        assert np.array_equal(explicit.pixel_array, _read(f.path).pixel_array)
        jpeg = h.get(f"{root}/wado", **params)
        assert jpeg.headers["Content-Type"] == "image/jpeg" and jpeg.content[:2] == b"\xff\xd8"
        small = h.get(f"{root}/wado", contentType="image/png", rows="50", columns="50", windowCenter="40", windowWidth="400", **params)
        from PIL import Image

        assert max(Image.open(io.BytesIO(small.content)).size) == 50
    assert h.get(f"{root}/wado", requestType="WADO", studyUID="1", seriesUID="2", objectUID="3").status_code == 404
    assert h.get(f"{root}/wado", studyUID="1", seriesUID="2", objectUID="3").status_code == 400


def test_unknown_uids_404_and_unacceptable_406(web_node):
    url = web_node.url
    f = web_node.file("JPEG2000.dcm")
    base = f"{url}/studies/{f.study_uid}/series/{f.series_uid}/instances/{f.sop_instance_uid}"
    for path in (
        f"{url}/studies/1.2.3.999", f"{url}/studies/{f.study_uid}/series/1.2.3.999",
        f"{url}/studies/{f.study_uid}/series/{f.series_uid}/instances/1.2.3.999",
        f"{url}/studies/1.2.3.999/series/{f.series_uid}/instances/{f.sop_instance_uid}",  # wrong study
        f"{url}/studies/1.2.3.999/metadata", f"{base}/frames/2", f"{base}/bulkdata/00991234",
        f"{url}/studies/1.2.3.999/thumbnail",
    ):  # fmt: skip
        assert h.get(path).status_code == 404, path
    rtplan = web_node.file("waveform_ecg.dcm")
    assert h.get(f"{url}/studies/{rtplan.study_uid}/series/{rtplan.series_uid}/instances/{rtplan.sop_instance_uid}/frames/1").status_code == 404
    # Stored JPEG 2000: neither JPEG nor JPEG-LS can be produced from it.
    assert h.get(f"{base}/frames/1", accept='multipart/related; type="image/jpeg"').status_code == 406
    assert h.get(base, accept='multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50').status_code == 406
    assert h.get(base, accept="application/zip").status_code == 406
    assert h.get(f"{base}/metadata", accept="application/dicom+xml").status_code == 406
    assert h.get(f"{base}/rendered", accept="image/tiff").status_code == 406
    assert h.get(f"{base}/frames/0").status_code == 400
