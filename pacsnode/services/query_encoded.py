"""C-FIND on the encoded identifier: encoded responses, without pydicom on the common path.

Decoding the identifier into a pydicom Dataset and writing each response with pydicom cost
most of a query's server time. Most identifiers are a flat list of ASCII keys the index
holds; for those the matchers are built from the raw values and each response is written
element by element from the index's view. Anything else (a sequence, a key read from the
stored files, a private tag, a VR other than the dictionary's, text outside ASCII, a Big
Endian identifier) takes QueryService's pydicom path, whose responses these are proven
equal to, byte for byte (tests/unit/test_query_encoded.py). So does a single response with
a value outside ASCII, which needs the character set logic.
"""
from __future__ import annotations

from collections.abc import MutableSequence
from typing import Iterator, NamedTuple

from pydicom.dataelem import RawDataElement
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.values import convert_value

from pacsnode.dicom import flat
from pacsnode.dicom.codec import decode_dataset, encode_dataset
from pacsnode.dicom.attributes import COMPUTED_KEYS, INDEXED, key_level, levels_up_to
from pacsnode.services.query import QueryService, build_matchers, element_value, query_level

_CONTROL = ("QueryRetrieveLevel", "SpecificCharacterSet", "RetrieveAETitle", "InstanceAvailability")
# tag -> (keyword, VR) of every key this path answers.
_KEYS: dict[int, tuple[str, str]] = {tag: (kw, vr) for kw, (tag, vr) in INDEXED.items()}
_KEYS.update({tag_for_keyword(kw): (kw, dictionary_VR(tag_for_keyword(kw))) for kw in (*COMPUTED_KEYS, *_CONTROL)})
# A single ASCII value of these VRs is what pydicom makes of it, the text without trailing
# padding, bar the cases _pydicom_changes() names (tests/unit/test_query_encoded.py compares
# them); other values go through pydicom.
_PLAIN_TEXT = frozenset(("AS", "CS", "DA", "DT", "LO", "PN", "SH", "TM", "UI"))
_TAG_LEVEL = tag_for_keyword("QueryRetrieveLevel")


class _Key(NamedTuple):
    """What build_matchers reads of an identifier element."""

    tag: int
    keyword: str
    VR: str
    value: object


class _Slot(NamedTuple):
    """One response element: a constant one, or the view's value of ``keyword``."""

    tag: int
    vr: str
    keyword: str | None
    constant: bytes | None


class EncodedFind:
    def __init__(self, query: QueryService) -> None:
        self.query = query

    def find(self, data: bytes, implicit: bool, little: bool, model_root: str) -> Iterator[bytes]:
        """Encoded response identifiers for an encoded request identifier (inflated)."""
        keys = _flat_keys(data, implicit) if little else None
        if keys is None:
            identifier = decode_dataset(data, implicit, little)
            for rsp in self.query.find(identifier, model_root):
                yield encode_dataset(rsp, implicit, little)
            return
        values = {k.keyword: k.value for k in keys}
        level = query_level(values, model_root)
        matchers = build_matchers(keys, level)
        slots = self._slots(keys, level, implicit)
        identifier = None
        for view in self.query.index.find(level, matchers):
            encoded = _response(slots, view, implicit)
            if encoded is None:  # a value outside ASCII: the character set logic decides
                if identifier is None:
                    identifier = decode_dataset(data, implicit, little)
                encoded = encode_dataset(self.query.response(identifier, level, view), implicit, little)
            yield encoded

    def _slots(self, keys: list[_Key], level: str, implicit: bool) -> list[_Slot]:
        """The response's elements in tag order, the same the pydicom path writes."""
        allowed = levels_up_to(level)
        slots = [_constant(_TAG_LEVEL, "CS", level, implicit)]
        for key in keys:
            if key.keyword == "SpecificCharacterSet":
                slots.append(_constant(key.tag, key.VR, element_value(key.VR, key.value), implicit))
            elif key.keyword == "RetrieveAETitle":
                slots.append(_constant(key.tag, key.VR, self.query.ae_title, implicit))
            elif key.keyword == "InstanceAvailability":
                slots.append(_constant(key.tag, key.VR, "ONLINE", implicit))
            elif key.keyword != "QueryRetrieveLevel":
                wanted = key.keyword if key_level(key.keyword) in allowed else None
                slots.append(_Slot(key.tag, key.VR, wanted, None if wanted else flat.element(key.tag, key.VR, b"", implicit)))
        return sorted(slots)


def _flat_keys(data: bytes, implicit: bool) -> list[_Key] | None:
    """The identifier's keys with pydicom's values, or None when this path cannot answer it."""
    elements = flat.read_flat(bytes(data), implicit)
    if elements is None:
        return None
    keys = []
    previous = -1
    for tag, vr, raw in elements:
        known = _KEYS.get(tag)
        if known is None or tag <= previous or (vr is not None and vr != known[1]):
            return None
        if not flat.is_binary(known[1]) and (not raw.isascii() or b"\x1b" in raw):
            return None
        previous = tag
        try:
            value = key_value(tag, known[1], raw, implicit)
        except Exception:  # the pydicom path reports the bad value
            return None
        keys.append(_Key(tag, known[0], known[1], value))
    return keys


def key_value(tag: int, vr: str, raw: bytes, implicit: bool) -> object:
    """An ASCII value as pydicom reads it (a list of str when it holds several)."""
    if vr in _PLAIN_TEXT and b"\\" not in raw and not _pydicom_changes(vr, raw):
        return raw.decode("ascii").rstrip(" \x00")
    value = convert_value(vr, RawDataElement(tag, vr, len(raw), raw, 0, implicit, True, True, False))
    return [str(v) for v in value] if isinstance(value, MutableSequence) else value


def _pydicom_changes(vr: str, raw: bytes) -> bool:
    """Whether pydicom's value differs from the text: PN drops empty trailing groups, UID
    strips whitespace."""
    if vr == "UI":
        text = raw.rstrip(b" \x00")
        return text != text.strip()
    return vr == "PN" and b"=" in raw


def _constant(tag: int, vr: str, value: object, implicit: bool) -> _Slot:
    raw = _value_bytes(value, vr)
    if raw is None:
        raise ValueError(f"cannot encode {value!r} as {vr}")
    return _Slot(tag, vr, None, flat.element(tag, vr, raw, implicit))


def _response(slots: list[_Slot], view: dict, implicit: bool) -> bytes | None:
    parts = []
    for slot in slots:
        if slot.constant is not None:
            parts.append(slot.constant)
            continue
        raw = _value_bytes(element_value(slot.vr, view.get(slot.keyword)), slot.vr)
        if raw is None:
            return None
        parts.append(flat.element(slot.tag, slot.vr, raw, implicit))
    return b"".join(parts)


def _value_bytes(value: object, vr: str) -> bytes | None:
    """A value as pydicom writes it, or None when only pydicom knows how."""
    if value is None:
        return b""
    if flat.is_binary(vr):
        try:
            return flat.binary_value(value, vr)
        except Exception:
            return None
    if isinstance(value, list):
        value = "\\".join(value)
    elif isinstance(value, int) and not isinstance(value, bool) and vr == "IS":
        value = str(value)
    if not isinstance(value, str):
        return None
    raw = flat.text_value(value, vr)
    if raw is None or not flat.fits_short_form(vr, len(raw)):
        return None
    return raw
