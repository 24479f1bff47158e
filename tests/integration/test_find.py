"""C-FIND with DCMTK's findscu at every level and with every matching kind, on the generated
set (hand-written expectations) and on the corpus (computed keys counted from the files)."""
from __future__ import annotations

import warnings
from collections import defaultdict

import pytest
from pydicom import dcmread
from pydicom.data import get_charset_files

from tests.data_gen import PATIENTS, STUDIES, GeneratedSet, many_instances
from tests.integration.helpers import (
    STUDY_ROOT_FIND,
    association,
    describe,
    find_all,
    findscu,
    identifier,
    rounds,
    store_datasets,
)

pytestmark = pytest.mark.integration

S1, S2, S3, S4 = (s.uid for s in STUDIES)
P1, P2, P3 = (p.id for p in PATIENTS.values())


def keys_of(ds) -> set[str]:
    return {e.keyword for e in ds}


def canon(keyword: str, value) -> object:
    """Compare values the way they mean: counts as ints, ModalitiesInStudy as a set."""
    if value is None or value == "":
        return None
    if keyword == "ModalitiesInStudy":
        return set([value] if isinstance(value, str) else value)
    if keyword.startswith("NumberOf") or keyword in ("SeriesNumber", "InstanceNumber", "BitsStored"):
        return int(value)
    return str(value)


# -- what the generated set holds, per level, keyed by each level's unique key -------------


def patient_views(g: GeneratedSet) -> dict[str, dict]:
    out = {}
    for p in PATIENTS.values():
        mine = [i for i in g.instances if i.study.patient == p]
        out[p.id] = {
            "PatientID": p.id,
            "PatientName": p.name,
            "PatientBirthDate": p.birth_date,
            "PatientSex": p.sex,
            "NumberOfPatientRelatedStudies": len({i.study.uid for i in mine}),
            "NumberOfPatientRelatedSeries": len({i.series_uid for i in mine}),
            "NumberOfPatientRelatedInstances": len(mine),
        }
    return out


def study_views(g: GeneratedSet) -> dict[str, dict]:
    out = {}
    for s in STUDIES:
        mine = g.of_study(s.key)
        out[s.uid] = {
            **{k: v for k, v in patient_views(g)[s.patient.id].items() if not k.startswith("NumberOf")},
            "StudyInstanceUID": s.uid,
            "StudyDate": s.date,
            "StudyTime": s.time,
            "AccessionNumber": s.accession,
            "StudyDescription": s.description,
            "StudyID": s.key,
            "NumberOfStudyRelatedSeries": len({i.series_uid for i in mine}),
            "NumberOfStudyRelatedInstances": len(mine),
            "ModalitiesInStudy": {i.modality for i in mine},
        }
    return out


def series_views(g: GeneratedSet) -> dict[str, dict]:
    out = {}
    for i in g.instances:
        study = {k: v for k, v in study_views(g)[i.study.uid].items() if not k.startswith(("NumberOf", "Modalities"))}
        out[i.series_uid] = {
            **study,
            "SeriesInstanceUID": i.series_uid,
            "Modality": i.modality,
            "SeriesNumber": i.series_number,
            "SeriesDescription": f"{i.modality} series {i.series_number}",
            "NumberOfSeriesRelatedInstances": len(g.of_series(i.series_uid)),
        }
    return out


def image_views(g: GeneratedSet) -> dict[str, dict]:
    out = {}
    for i in g.instances:
        series = {k: v for k, v in series_views(g)[i.series_uid].items() if not k.startswith("NumberOf")}
        out[i.sop_instance_uid] = {
            **series,
            "SOPInstanceUID": i.sop_instance_uid,
            "SOPClassUID": i.sop_class_uid,
            "InstanceNumber": i.instance_number,
            "AcquisitionDateTime": i.acquisition_datetime,
            "ContentTime": i.content_time,
            "BitsStored": 12,
        }
    return out


VIEWS = {"PATIENT": patient_views, "STUDY": study_views, "SERIES": series_views, "IMAGE": image_views}
UNIQUE = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}
# Return keys asked at each level besides the matching keys (universal matching: empty value).
RETURN_KEYS = {
    "PATIENT": ["PatientName", "PatientBirthDate", "PatientSex", "NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries", "NumberOfPatientRelatedInstances"],
    "STUDY": ["PatientName", "PatientID", "StudyDate", "StudyTime", "AccessionNumber", "StudyDescription", "NumberOfStudyRelatedInstances", "NumberOfStudyRelatedSeries", "ModalitiesInStudy"],
    "SERIES": ["StudyInstanceUID", "Modality", "SeriesNumber", "SeriesDescription", "NumberOfSeriesRelatedInstances"],
    # BitsStored is not indexed: the node reads it from the stored instance.
    "IMAGE": ["SeriesInstanceUID", "SOPClassUID", "InstanceNumber", "AcquisitionDateTime", "ContentTime", "BitsStored"],
}

SERIES_S1_1, SERIES_S1_2, SERIES_S2_1, SERIES_S3_1, SERIES_S3_2, SERIES_S4_1 = (
    f"{S1[:-3]}2.{n}" for n in ("1.1", "1.2", "2.1", "3.1", "3.2", "4.1")
)


def sop(study: int, series: int, instance: int) -> str:
    return f"{S1[:-3]}3.{study}.{series}.{instance}"


# (id, model, level, matching keys, expected unique keys of the matches)
CASES = [
    # PATIENT level, patient root
    ("patient-single", "P", "PATIENT", {"PatientID": P2}, {P2}),
    ("patient-universal", "P", "PATIENT", {}, {P1, P2, P3}),
    ("patient-name-star-any-case", "P", "PATIENT", {"PatientName": "DOE^*"}, {P1, P3}),
    ("patient-id-question", "P", "PATIENT", {"PatientID": "PNGEN?1"}, {P1}),
    ("patient-id-question-all", "P", "PATIENT", {"PatientID": "PNGEN-?"}, {P1, P2, P3}),
    ("patient-name-lower", "P", "PATIENT", {"PatientName": "doe^john"}, {P1}),
    ("patient-name-upper", "P", "PATIENT", {"PatientName": "DOE^JANE"}, {P3}),
    ("patient-birth-range", "P", "PATIENT", {"PatientBirthDate": "19800101-19991231"}, {P2, P3}),
    ("patient-birth-until", "P", "PATIENT", {"PatientBirthDate": "-19800101"}, {P1}),
    ("patient-list", "P", "PATIENT", {"PatientID": f"{P1}\\{P3}"}, {P1, P3}),
    # STUDY level, study root (and patient root below a patient)
    ("study-universal", "S", "STUDY", {}, {S1, S2, S3, S4}),
    ("study-single-accession", "S", "STUDY", {"AccessionNumber": "ACC-1002"}, {S2}),
    ("study-single-date", "S", "STUDY", {"StudyDate": "20200301"}, {S3}),
    ("study-uid-list", "S", "STUDY", {"StudyInstanceUID": f"{S1}\\{S3}"}, {S1, S3}),
    ("study-date-range", "S", "STUDY", {"StudyDate": "20200101-20201231"}, {S1, S3}),
    ("study-date-until", "S", "STUDY", {"StudyDate": "-20200115"}, {S1, S4}),
    ("study-date-from", "S", "STUDY", {"StudyDate": "20210101-"}, {S2}),
    ("study-time-range", "S", "STUDY", {"StudyTime": "080000-150000"}, {S1, S2}),
    ("study-time-from", "S", "STUDY", {"StudyTime": "2300-"}, {S3}),
    ("study-time-range-fraction", "S", "STUDY", {"StudyTime": "141500.124-"}, {S3}),
    ("study-description-question", "S", "STUDY", {"StudyDescription": "CT?MR abdomen"}, {S3}),
    ("study-description-star", "S", "STUDY", {"StudyDescription": "*head"}, {S2}),
    ("study-patient-name-any-case", "S", "STUDY", {"PatientName": "smith^anna^maria"}, {S3}),
    ("study-modalities", "S", "STUDY", {"ModalitiesInStudy": "MR"}, {S2, S3}),
    ("study-date-and-name", "S", "STUDY", {"StudyDate": "20200101-", "PatientName": "Doe*"}, {S1, S2}),
    ("study-under-patient", "P", "STUDY", {"PatientID": P1}, {S1, S2}),
    # SERIES level
    ("series-of-study", "S", "SERIES", {"StudyInstanceUID": S1}, {SERIES_S1_1, SERIES_S1_2}),
    ("series-modality", "S", "SERIES", {"Modality": "MR"}, {SERIES_S2_1, SERIES_S3_2}),
    ("series-number", "S", "SERIES", {"StudyInstanceUID": S3, "SeriesNumber": "2"}, {SERIES_S3_2}),
    ("series-uid-list", "S", "SERIES", {"SeriesInstanceUID": f"{SERIES_S1_2}\\{SERIES_S4_1}"}, {SERIES_S1_2, SERIES_S4_1}),
    ("series-description-star", "S", "SERIES", {"SeriesDescription": "CT*"}, {SERIES_S1_1, SERIES_S1_2, SERIES_S3_1}),
    ("series-description-question", "S", "SERIES", {"SeriesDescription": "?? series 2"}, {SERIES_S1_2, SERIES_S3_2}),
    # IMAGE level
    ("image-of-series", "S", "IMAGE", {"StudyInstanceUID": S1, "SeriesInstanceUID": SERIES_S1_1}, {sop(1, 1, 1), sop(1, 1, 2), sop(1, 1, 3)}),
    ("image-uid-list", "S", "IMAGE", {"SOPInstanceUID": f"{sop(2, 1, 2)}\\{sop(4, 1, 1)}"}, {sop(2, 1, 2), sop(4, 1, 1)}),
    ("image-number", "S", "IMAGE", {"InstanceNumber": "3"}, {sop(1, 1, 3), sop(4, 1, 3)}),
    (
        "image-datetime-range",
        "S",
        "IMAGE",
        {"AcquisitionDateTime": "20200115090000-20200115092500"},
        {sop(1, 1, 1), sop(1, 1, 2)},
    ),
    (
        "image-datetime-days",
        "S",
        "IMAGE",
        {"AcquisitionDateTime": "20200101-20200301"},
        {sop(1, 1, 1), sop(1, 1, 2), sop(1, 1, 3), sop(1, 2, 1), sop(1, 2, 2), sop(3, 1, 1), sop(3, 2, 1), sop(3, 2, 2)},
    ),
    ("image-datetime-from", "S", "IMAGE", {"AcquisitionDateTime": "2021-"}, {sop(2, 1, 1), sop(2, 1, 2)}),
    ("image-time-range", "S", "IMAGE", {"ContentTime": "100000-101500"}, {sop(1, 2, 1), sop(3, 2, 1)}),
]


@pytest.mark.parametrize("model,level,matching,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_findscu_matching(generated_node, generated, tmp_path, model, level, matching, expected):
    unique = UNIQUE[level]
    asked = {unique: None, **{k: None for k in RETURN_KEYS[level]}, **matching}
    responses = findscu(generated_node, level, asked, tmp_path, model=model)

    found = [str(r.get(unique)) for r in responses]
    assert sorted(found) == sorted(expected), f"{level} {matching}"
    views = VIEWS[level](generated)
    for r in responses:
        # Exactly the keys asked for, plus the level (and a character set if the node adds one).
        assert keys_of(r) - {"SpecificCharacterSet"} == set(asked) | {"QueryRetrieveLevel"}
        assert r.QueryRetrieveLevel == level
        view = views[str(r.get(unique))]
        for kw in asked:
            if kw in view:  # return keys carry the entity's values (computed keys included)
                assert canon(kw, r.get(kw)) == canon(kw, view[kw]), kw


def test_findscu_returns_nothing_for_no_match(generated_node, tmp_path):
    assert findscu(generated_node, "STUDY", {"StudyInstanceUID": None, "StudyDate": "19000101"}, tmp_path) == []
    assert findscu(generated_node, "PATIENT", {"PatientName": "nobody*"}, tmp_path, model="P") == []


# -- computed keys on the corpus ------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus_node(load_node, corpus):
    """A node with every corpus file that does not repeat a SOP Instance UID."""
    node, report = load_node(rounds(corpus)[0])
    by_path = {f.path: f for f in corpus}
    sent = [by_path[p] for p in report.succeeded()]
    assert len(sent) > 40, report.output
    return node, sent


def expected_counts(files):
    """The computed keys as counted from the files stored, in their order. An instance is
    filed under the first study that brought its series and the first patient that brought
    its study (the node's rule for inconsistent headers; the corpus has none in this round)."""
    study_of_series, patient_of_study = {}, {}
    series_n, study_series, study_n, study_mods, patient_studies = (
        defaultdict(int), defaultdict(set), defaultdict(int), defaultdict(set), defaultdict(set),
    )
    for f in files:
        study = study_of_series.setdefault(f.series_uid, f.study_uid)
        patient = patient_of_study.setdefault(study, f.patient_id)
        series_n[f.series_uid] += 1
        study_n[study] += 1
        study_series[study].add(f.series_uid)
        if f.modality:
            study_mods[study].add(f.modality)
        patient_studies[patient].add(study)
    return series_n, study_n, study_series, study_mods, patient_studies


def test_computed_keys_match_the_corpus_sent(corpus_node, tmp_path):
    node, sent = corpus_node
    series_n, study_n, study_series, study_mods, patient_studies = expected_counts(sent)

    studies = findscu(
        node, "STUDY",
        {"StudyInstanceUID": None, "NumberOfStudyRelatedInstances": None, "NumberOfStudyRelatedSeries": None, "ModalitiesInStudy": None},
        tmp_path,
    )
    got = {
        str(r.StudyInstanceUID): (int(r.NumberOfStudyRelatedInstances), int(r.NumberOfStudyRelatedSeries), canon("ModalitiesInStudy", r.ModalitiesInStudy or []))
        for r in studies
    }
    want = {s: (study_n[s], len(study_series[s]), study_mods[s]) for s in study_n}
    assert got == want

    series = findscu(node, "SERIES", {"SeriesInstanceUID": None, "NumberOfSeriesRelatedInstances": None}, tmp_path)
    assert {str(r.SeriesInstanceUID): int(r.NumberOfSeriesRelatedInstances) for r in series} == dict(series_n)

    patients = findscu(node, "PATIENT", {"PatientID": None, "NumberOfPatientRelatedStudies": None}, tmp_path, model="P")
    assert {str(r.PatientID or ""): int(r.NumberOfPatientRelatedStudies) for r in patients} == {
        p: len(s) for p, s in patient_studies.items()
    }

    images = findscu(node, "IMAGE", {"SOPInstanceUID": None}, tmp_path)
    assert sorted(str(r.SOPInstanceUID) for r in images) == sorted(f.sop_instance_uid for f in sent)


# -- character sets and C-CANCEL, with pynetdicom as the SCU (decoded Unicode, exact statuses) --


def _original_name(f) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return str(dcmread(f.path, stop_before_pixels=True).PatientName)


def _groups(name: str) -> list[str]:
    """A name's forms a query may equal: the whole name and each component group."""
    return [name.casefold()] + name.casefold().split("=")


@pytest.fixture(scope="module")
def charset_node(load_node):
    """A node with pydicom's character set files (UTF-8, Latin-1, ISO 2022 JIS/KS X, Greek,
    Hebrew, Cyrillic, Arabic, GB18030); files repeating a SOP Instance UID are left out and
    checked to carry the same name as the file stored."""
    files = [d for d in map(describe, sorted(get_charset_files("chr*.dcm"))) if d is not None]
    first, *repeats = rounds(files)
    node, report = load_node(first)
    assert report.succeeded() == [f.path for f in first], report.output
    for f in (f for r in repeats for f in r):
        twin = next(t for t in first if t.sop_instance_uid == f.sop_instance_uid)
        assert _original_name(f) == _original_name(twin), f"{f.name} is not covered by {twin.name}"
    return node, first


def test_charset_names_round_trip(charset_node):
    node, files = charset_node
    assert len(files) >= 12
    with association(node) as assoc:
        for f in files:
            name = _original_name(f)
            query = identifier("STUDY", SpecificCharacterSet="ISO_IR 192", PatientName=name, StudyInstanceUID="")
            status, matches = find_all(assoc, query)
            assert status == 0x0000, f.name
            # A name matches itself and, as the node matches, any of its component groups.
            want = {t.study_uid for t in files if name.casefold() in _groups(_original_name(t))}
            assert {str(m.StudyInstanceUID) for m in matches} == want, (f.name, name)
            for m in matches:  # each name as its own file has it, decoded right
                original = next(t for t in files if t.study_uid == str(m.StudyInstanceUID))
                assert str(m.PatientName) == _original_name(original), f.name


@pytest.mark.parametrize("charset", [None, "ISO_IR 100", "ISO_IR 192"])
def test_charset_names_in_any_requested_character_set(charset_node, charset):
    """Every name comes back as the file has it, whatever the query's character set: names
    the requested set cannot hold come in one that can (and say which)."""
    node, files = charset_node
    query = identifier("STUDY", PatientName="", StudyInstanceUID="")
    if charset:
        query.SpecificCharacterSet = charset
    with association(node) as assoc:
        status, matches = find_all(assoc, query)
    assert status == 0x0000
    got = {str(m.StudyInstanceUID): str(m.PatientName) for m in matches}
    assert got == {f.study_uid: _original_name(f) for f in files}


@pytest.mark.parametrize(
    "charset,query,file",
    [
        ("ISO_IR 100", "buc^jérôme", "chrFren.dcm"),  # Latin-1 on the wire, other case
        ("ISO_IR 192", "BUC^JÉRÔME", "chrFren.dcm"),
        ("ISO_IR 192", "äneas^rüdiger", "chrGerm.dcm"),
        ("ISO_IR 192", "ΔΙΟΝΥΣΙΟΣ", "chrGreek.dcm"),
        ("ISO_IR 192", "люкceмбypг", "chrRuss.dcm"),
        ("ISO_IR 192", "yamada^tarou", "chrH31.dcm"),  # one component group of a multi-group name
        ("ISO_IR 192", "山田*", None),  # the ideographic group, wildcard: both Japanese files
    ],
)
def test_charset_names_match_without_case(charset_node, charset, query, file):
    node, files = charset_node
    if file is None:
        want = {f.study_uid for f in files if f.name in ("chrH31.dcm", "chrH32.dcm")}
    else:
        want = {f.study_uid for f in files if f.name == file}
    with association(node) as assoc:
        status, matches = find_all(assoc, identifier("STUDY", SpecificCharacterSet=charset, PatientName=query, StudyInstanceUID=""))
    assert status == 0x0000
    assert {str(m.StudyInstanceUID) for m in matches} == want
    for m in matches:  # answered in a character set that holds the name, decoded right
        original = next(f for f in files if f.study_uid == str(m.StudyInstanceUID))
        assert str(m.PatientName) == _original_name(original)


@pytest.fixture(scope="module")
def many_node(module_node_factory):
    node = module_node_factory()
    assert set(store_datasets(node, many_instances(MANY))) == {0x0000}
    return node


MANY = 2000


def test_c_cancel_stops_a_find(many_node):
    """C-CANCEL after the first pending response: the node ends with 0xFE00 (Cancel) before
    sending all of the 2,000 matches, and the association goes on."""
    query = identifier("IMAGE", SOPInstanceUID="", InstanceNumber="")
    with association(many_node) as assoc:
        responses = assoc.send_c_find(query, STUDY_ROOT_FIND, msg_id=7)
        status, ident = next(responses)
        assert status.Status == 0xFF00
        context = next(cx for cx in assoc.accepted_contexts if cx.abstract_syntax == STUDY_ROOT_FIND)
        assoc.send_c_cancel(7, context.context_id)
        pending, final = 1, None
        for status, ident in responses:
            if status.Status == 0xFF00:
                pending += 1
            else:
                final = status.Status
        assert final == 0xFE00
        assert pending < MANY, "the cancel came too late to stop anything"
        # The association is still usable, and the same query without a cancel gets everything.
        status, everything = find_all(assoc, query)
        assert status == 0x0000 and len(everything) == MANY
