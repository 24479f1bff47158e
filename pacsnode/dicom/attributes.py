"""The attributes the index keeps per query level, and how their raw bytes become values."""
from __future__ import annotations

import functools
import struct

from pydicom.charset import decode_bytes
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.valuerep import PersonName

LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")

# Indexed attributes per level; C-FIND matches on these without reading any file.
LEVEL_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "PATIENT": (
        "PatientName",
        "PatientID",
        "IssuerOfPatientID",
        "PatientBirthDate",
        "PatientBirthTime",
        "PatientSex",
        "OtherPatientNames",
        "EthnicGroup",
        "PatientComments",
    ),
    "STUDY": (
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "StudyID",
        "ReferringPhysicianName",
        "StudyDescription",
        "NameOfPhysiciansReadingStudy",
        "PatientAge",
        "PatientSize",
        "PatientWeight",
        "InstitutionName",
    ),
    "SERIES": (
        "SeriesInstanceUID",
        "Modality",
        "SeriesNumber",
        "SeriesDescription",
        "SeriesDate",
        "SeriesTime",
        "BodyPartExamined",
        "ProtocolName",
        "Laterality",
        "StationName",
        "PerformedProcedureStepStartDate",
        "PerformedProcedureStepStartTime",
        "Manufacturer",
    ),
    "IMAGE": (
        "SOPInstanceUID",
        "SOPClassUID",
        "InstanceNumber",
        "ContentDate",
        "ContentTime",
        "AcquisitionDate",
        "AcquisitionTime",
        "AcquisitionDateTime",
        "ImageType",
        "Rows",
        "Columns",
        "NumberOfFrames",
        "BitsAllocated",
        "PhotometricInterpretation",
        "LossyImageCompression",
    ),
}

# Keys computed from the index, never read from a header (PS3.4 C.3.4).
COMPUTED_KEYS: dict[str, str] = {
    "NumberOfPatientRelatedStudies": "PATIENT",
    "NumberOfPatientRelatedSeries": "PATIENT",
    "NumberOfPatientRelatedInstances": "PATIENT",
    "NumberOfStudyRelatedSeries": "STUDY",
    "NumberOfStudyRelatedInstances": "STUDY",
    "ModalitiesInStudy": "STUDY",
    "SOPClassesInStudy": "STUDY",
    "NumberOfSeriesRelatedInstances": "SERIES",
}

UNIQUE_KEYS = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}

TAG_SPECIFIC_CHARACTER_SET = 0x00080005

_TEXT_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
# VRs whose bytes follow Specific Character Set (PS3.5 6.1.2.3); others are plain ASCII.
_CHARSET_VRS = {"LO", "LT", "PN", "SH", "ST", "UC", "UT"}
_BINARY_FORMATS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d"}


def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    return tag


# keyword -> (tag, VR), for every indexed attribute.
INDEXED: dict[str, tuple[int, str]] = {
    kw: (_tag(kw), dictionary_VR(_tag(kw))) for level in LEVELS for kw in LEVEL_ATTRIBUTES[level]
}
KEYWORD_LEVEL: dict[str, str] = {kw: level for level in LEVELS for kw in LEVEL_ATTRIBUTES[level]}
# What the scanner is asked for on ingest: every indexed tag plus Specific Character Set.
SCAN_TAGS: tuple[int, ...] = tuple(sorted({t for t, _ in INDEXED.values()} | {TAG_SPECIFIC_CHARACTER_SET}))
TAG_KEYWORD: dict[int, str] = {tag: kw for kw, (tag, _) in INDEXED.items()}


def key_level(keyword: str) -> str | None:
    """The query level an indexed or computed key belongs to; None for other keys."""
    return KEYWORD_LEVEL.get(keyword) or COMPUTED_KEYS.get(keyword)


def levels_up_to(level: str) -> tuple[str, ...]:
    """The levels at and above ``level``: those whose keys a query at ``level`` matches on."""
    return LEVELS[: LEVELS.index(level) + 1]


def charset_encodings(raw: bytes | None) -> list[str]:
    """Python codecs for a raw Specific Character Set value (default repertoire: ASCII)."""
    return list(_encodings(bytes(raw or b"")))


@functools.lru_cache(maxsize=64)
def _encodings(raw: bytes) -> tuple[str, ...]:
    # Every stored instance asks; a node sees a handful of distinct values.
    if not raw:
        return ("iso8859",)
    from pydicom.charset import convert_encodings

    terms = [t.strip() for t in raw.decode("ascii", "replace").strip(" \x00").split("\\")]
    return tuple(convert_encodings(terms))


def decode_value(raw: bytes, vr: str, encodings: list[str], little_endian: bool = True) -> str | int | float | list | None:
    """Turn raw element bytes into the value the index stores.

    Text is decoded (in the instance's character set where the VR follows it) and stripped
    of padding, multi-valued text keeps DICOM's backslash form; binary numbers become ints
    or floats (a list when several). Empty values become None.
    """
    if vr in _TEXT_VRS:
        if vr == "UI":
            text = raw.rstrip(b"\x00 ").decode("ascii", "replace")
        # ISO 2022 (e.g. JIS X 0208) is 7-bit: ESC sequences switch sets within ASCII bytes.
        elif vr in _CHARSET_VRS and (not raw.isascii() or b"\x1b" in raw):
            if vr == "PN":
                text = str(PersonName(raw, encodings=encodings))
            else:
                text = decode_bytes(raw, encodings, {0x5C} if vr not in ("LT", "ST", "UT") else set())
        else:
            text = raw.decode("ascii", "replace")
        text = text.rstrip(" \x00") if vr in ("LT", "ST", "UT", "UR") else text.strip(" \x00")
        return text or None
    fmt = _BINARY_FORMATS.get(vr)
    if fmt is None or not raw:
        return None
    count = len(raw) // struct.calcsize(fmt)
    values = struct.unpack(("<" if little_endian else ">") + fmt * count, raw[: count * struct.calcsize(fmt)])
    return values[0] if count == 1 else list(values)
