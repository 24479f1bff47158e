"""DICOM JSON (PS3.18 Annex F): index views for QIDO, datasets with BulkDataURIs for /metadata.

QIDO answers are written from the index's views directly (no pydicom Dataset per match);
/metadata uses pydicom's ``Dataset.to_json_dict`` with a bulk data handler that names each
large value by its tag path, so /bulkdata can find it again, nested values included.
"""
from __future__ import annotations

import json
import math
from typing import Callable, Iterable

from pydicom import Dataset
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement

from pacsnode.dicom.attributes import INDEXED

_NUMBER_VRS = {"US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"}
_TEXT_SINGLE = {"LT", "ST", "UT", "UR"}  # never multi-valued: a backslash is text
BULK_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
BULK_THRESHOLD = 1024


def tag_hex(tag: int) -> str:
    return f"{tag:08X}"


def vr_of(keyword: str) -> str:
    if keyword in INDEXED:
        return INDEXED[keyword][1]
    tag = tag_for_keyword(keyword)
    return dictionary_VR(tag) if tag is not None else "UN"


def _number(text: str, vr: str) -> int | float | None:
    text = text.strip()
    if not text:
        return None
    try:
        if vr == "IS":
            return int(float(text)) if "." in text or "e" in text.lower() else int(text)
        value = float(text)
    except ValueError:
        return None
    if math.isnan(value) or math.isinf(value):
        return None
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


def _person(text: str) -> dict:
    groups = text.split("=")
    out = {}
    for name, group in zip(("Alphabetic", "Ideographic", "Phonetic"), groups):
        if group:
            out[name] = group
    return out


def element_json(vr: str, value: object) -> dict:
    """One attribute as DICOM JSON from an index value (text with backslashes, int, list)."""
    out: dict = {"vr": vr}
    if value is None or value == "" or value == []:
        return out
    if isinstance(value, (list, tuple)):
        items = list(value)
    elif isinstance(value, str) and vr not in _TEXT_SINGLE:
        items = value.split("\\")
    else:
        items = [value]
    if vr == "PN":
        values = [_person(str(v)) if v else None for v in items]
    elif vr in ("IS", "DS"):
        values = [v if isinstance(v, (int, float)) else _number(str(v), vr) for v in items]
    elif vr in _NUMBER_VRS:
        values = [v if isinstance(v, (int, float)) else _number(str(v), "DS") for v in items]
    else:
        values = [str(v) if v != "" else None for v in items]
    if any(v is not None for v in values):
        out["Value"] = values
    return out


def view_json(view: dict, keywords: Iterable[str], extra: dict[str, dict] | None = None) -> dict:
    """A QIDO match: the asked ``keywords`` from an index view (in tag order), plus ``extra``
    attributes already in JSON form (keyed by 8-hex tag)."""
    out: dict[str, dict] = {}
    for kw in keywords:
        tag = tag_for_keyword(kw)
        if tag is None:
            continue
        out[tag_hex(tag)] = element_json(vr_of(kw), view.get(kw))
    if extra:
        out.update(extra)
    return dict(sorted(out.items()))


def dumps(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# -- datasets (metadata) ------------------------------------------------------------------


def _paths(ds: Dataset, prefix: tuple = ()) -> dict[int, tuple]:
    """id(element) -> tag path (tag, item index, tag, ...) of every element of ``ds``."""
    out: dict[int, tuple] = {}
    for elem in ds:
        path = prefix + (elem.tag,)
        out[id(elem)] = path
        if elem.VR == "SQ" and elem.value:
            for n, item in enumerate(elem.value):
                out.update(_paths(item, path + (n,)))
    return out


def path_text(path: tuple) -> str:
    """A tag path as in the bulkdata URL: ``7FE00010`` or ``00880200/0/7FE00010``."""
    return "/".join(tag_hex(p) if i % 2 == 0 else str(p) for i, p in enumerate(path))


def dataset_json(ds: Dataset, bulk_uri: Callable[[str], str], threshold: int = BULK_THRESHOLD) -> dict:
    """``ds`` as DICOM JSON; binary values over ``threshold`` bytes become BulkDataURIs."""
    paths = _paths(ds)

    def handler(elem: DataElement) -> str:
        return bulk_uri(path_text(paths.get(id(elem), (elem.tag,))))

    return ds.to_json_dict(bulk_data_threshold=threshold, bulk_data_element_handler=handler)


def keyword(tag: int) -> str:
    return keyword_for_tag(tag) or tag_hex(tag)
