"""C-FIND matching rules (PS3.4 C.2.2.2) on index values."""
import pytest

from pacsnode.dicom.matching import build_matcher, normalize_datetime, normalize_time


@pytest.mark.parametrize(
    "vr,query,value,expected",
    [
        ("LO", "PAT001", "PAT001", True),
        ("LO", "PAT001", "PAT0011", False),
        ("LO", "pat001", "PAT001", False),  # only PN is case-insensitive
        ("LO", "PAT*", "PAT001", True),
        ("LO", "P?T001", "PAT001", True),
        ("LO", "P?T001", "PT001", False),
        ("LO", "*", None, True),
        ("LO", "PAT001", None, False),
        ("PN", "doe^john", "Doe^John", True),
        ("PN", "DOE^JOHN", "Doe^John^^^", True),
        ("PN", "doe*", "Doe^John", True),
        ("PN", "*john", "Doe^John", True),
        ("PN", "smith*", "Doe^John", False),
        ("PN", "山田*", "Yamada^Tarou=山田^太郎=やまだ^たろう", True),
        ("PN", "yamada^tarou", "Yamada^Tarou=山田^太郎=やまだ^たろう", True),
        ("PN", "Buc^Jérôme", "Buc^Jérôme", True),
        ("PN", "BUC^JÉRÔME", "Buc^Jérôme", True),
        ("UI", "1.2.3\\1.2.4", "1.2.4", True),
        ("UI", "1.2.3\\1.2.4", "1.2.5", False),
        ("UI", "1.2.*", "1.2.3", False),  # no wildcards in UIDs
        ("CS", "CT\\MR", "MR", True),
        ("CS", "CT\\MR", "US", False),
        ("CS", "CT", ["US", "CT"], True),  # ModalitiesInStudy: any value
        ("CS", "ORIGINAL", "DERIVED\\PRIMARY", False),
        ("CS", "PRIMARY", "DERIVED\\PRIMARY", True),
        ("DA", "20200101-20200131", "20200115", True),
        ("DA", "20200101-20200131", "20200201", False),
        ("DA", "20200101-", "20251231", True),
        ("DA", "-20200101", "20200102", False),
        ("DA", "-20200101", "20200101", True),
        ("DA", "20200101", "20200101", True),
        ("DA", "20200101", "20200102", False),
        ("DA", "20200101-20200131", None, False),
        ("TM", "1000-1030", "103059", True),
        ("TM", "1000-1030", "103100", False),
        ("TM", "1000-", "0959", False),
        ("TM", "10", "101500.123", True),
        ("DT", "20200101-20200102", "20200102235959", True),
        ("DT", "20200101-20200102", "20200103000000", False),
        ("DT", "20200101120000-0500", "20200101120000", True),
        ("US", "512", 512, True),
        ("US", "512", 256, False),
        ("IS", "3", "3", True),
        ("IS", "3", "03", True),
    ],
)
def test_matching(vr, query, value, expected):
    matcher = build_matcher("Key", vr, query)
    assert matcher is not None
    assert matcher(value) is expected


@pytest.mark.parametrize("query", [None, "", "  ", []])
def test_universal(query):
    assert build_matcher("PatientID", "LO", query) is None


def test_index_hints():
    assert build_matcher("PatientName", "PN", "DOE*").prefix == "doe"
    assert build_matcher("PatientName", "PN", "Doe^John").exact == ("doe^john",)
    assert build_matcher("StudyDate", "DA", "20200101-").range == ("20200101", None)
    assert build_matcher("PatientID", "LO", "*X").prefix is None


def test_time_normalization_orders_partial_values():
    assert normalize_time("10") == normalize_time("1000") < normalize_time("100000.000001")
    assert normalize_time("10", upper=True) >= normalize_time("105959.999999")
    assert normalize_datetime("2020") < normalize_datetime("20200101000001")
    assert normalize_datetime("2020", upper=True) >= normalize_datetime("20201231235959")


def test_pydicom_multivalue_query_is_a_value_list():
    """pydicom decodes 'A\\B' in a query as MultiValue (not a list): still any-of matching."""
    from pydicom.multival import MultiValue

    m = build_matcher("PatientID", "LO", MultiValue(str, ["PAT1", "PAT3"]))
    assert m("PAT3") and not m("PAT2")
    assert m.exact == ("PAT1", "PAT3")
    uids = build_matcher("StudyInstanceUID", "UI", MultiValue(str, ["1.2.3", "1.2.4"]))
    assert uids("1.2.4") and uids.exact == ("1.2.3", "1.2.4")
