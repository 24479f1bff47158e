"""C-FIND logic: identifier -> matchers -> index -> response identifiers with exactly the asked keys."""
from __future__ import annotations

import logging
from io import BytesIO
from typing import Iterable, Iterator, Mapping

from pydicom import Dataset, dcmread
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement

from pacsnode.dicom.attributes import INDEXED, KEYWORD_LEVEL, LEVELS, key_level, levels_up_to
from pacsnode.dicom.matching import Matcher, build_matcher
from pacsnode.errors import InvalidQueryError
from pacsnode.index.base import Index
from pacsnode.storage.base import BlobStore

LOGGER = logging.getLogger(__name__)

MODEL_LEVELS = {"PATIENT": LEVELS, "STUDY": LEVELS[1:]}
_CONTROL_KEYS = {"QueryRetrieveLevel", "SpecificCharacterSet"}
_UTF8 = "ISO_IR 192"


def query_level(identifier: Mapping, model_root: str) -> str:
    level = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
    if level not in MODEL_LEVELS[model_root]:
        raise InvalidQueryError(f"QueryRetrieveLevel {level!r} not valid for the {model_root} root model")
    return level


def build_matchers(identifier: Iterable, level: str) -> dict[str, Matcher]:
    """Matchers for the indexed and computed keys at or above ``level``; other keys are
    return keys only (universal matching, as PS3.4 C.2.2.1 allows for optional keys).
    ``identifier`` yields elements with pydicom's ``keyword``, ``VR`` and ``value``."""
    allowed = levels_up_to(level)
    matchers: dict[str, Matcher] = {}
    for elem in identifier:
        kw = elem.keyword
        if kw in _CONTROL_KEYS or key_level(kw) not in allowed:
            continue
        vr = INDEXED[kw][1] if kw in INDEXED else elem.VR
        try:
            value = elem.value
        except Exception as exc:  # pydicom decodes lazily; a bad value surfaces here
            raise InvalidQueryError(f"cannot decode query key {kw}") from exc
        matcher = build_matcher(kw, vr, value)
        if matcher is not None:
            matchers[kw] = matcher
    return matchers


class QueryService:
    def __init__(self, index: Index, blobs: BlobStore, ae_title: str) -> None:
        self.index = index
        self.blobs = blobs
        self.ae_title = ae_title

    def find(self, identifier: Dataset, model_root: str) -> Iterator[Dataset]:
        level = query_level(identifier, model_root)
        matchers = build_matchers(identifier, level)
        for view in self.index.find(level, matchers):
            yield self.response(identifier, level, view)

    def response(self, identifier: Dataset, level: str, view: dict) -> Dataset:
        """The response identifier for one matching view: exactly the keys asked."""
        allowed = levels_up_to(level)
        rsp = Dataset()
        from_file: list[int] = []
        for elem in identifier:
            kw = elem.keyword
            if kw in _CONTROL_KEYS:
                continue
            value = None
            if kw == "RetrieveAETitle":
                value = self.ae_title
            elif kw == "InstanceAvailability":
                value = "ONLINE"
            elif key_level(kw) in allowed:
                value = view.get(kw)
            elif kw and key_level(kw) is None:
                from_file.append(elem.tag)
            rsp.add(DataElement(elem.tag, elem.VR if elem.VR != "UN" else dictionary_VR(elem.tag), element_value(elem.VR, value)))
        if from_file:
            self._fill_from_file(rsp, level, view, from_file)
        rsp.QueryRetrieveLevel = level
        self._set_charset(rsp, identifier)
        return rsp

    def _fill_from_file(self, rsp: Dataset, level: str, view: dict, tags: list[int]) -> None:
        """Keys the index does not hold come from the entity's first stored instance."""
        if level == "IMAGE":
            blob_id = view["_blob"]
        else:
            first = next(iter(self.index.instances_under(level, view["_key"])), None)
            if first is None:
                return
            blob_id = first.blob_id
        try:
            path = self.blobs.local_path(blob_id)
            source = path if path is not None else BytesIO(self.blobs.read(blob_id))
            stored = dcmread(source, stop_before_pixels=True, specific_tags=tags)
        except Exception:
            LOGGER.exception("cannot read stored instance %s for return keys", blob_id)
            return
        for tag in tags:
            if tag in stored and keyword_for_tag(tag) and KEYWORD_LEVEL.get(keyword_for_tag(tag)) is None:
                rsp[tag] = stored[tag]

    @staticmethod
    def _set_charset(rsp: Dataset, identifier: Dataset) -> None:
        texts = [str(e.value) for e in rsp if e.VR in ("PN", "LO", "SH", "LT", "ST", "UT", "UC") and e.value]
        asked = identifier.get("SpecificCharacterSet")
        if all(t.isascii() for t in texts):
            if asked is not None:
                rsp.SpecificCharacterSet = asked
            return
        if asked:
            # Answer in the requester's character set when every value fits in it.
            from pydicom.charset import convert_encodings

            terms = [asked] if isinstance(asked, str) else list(asked)
            try:
                encodings = convert_encodings(terms)
            except (LookupError, ValueError):
                encodings = []
            # pydicom's encode_string does not raise on what a set cannot hold: it writes '?'.
            if encodings and all(_fits(t, encodings) for t in texts):
                rsp.SpecificCharacterSet = asked
                return
        rsp.SpecificCharacterSet = _UTF8


def _encodable(text: str, encoding: str) -> bool:
    try:
        text.encode(encoding)
    except (UnicodeError, LookupError):
        return False
    return True


def _fits(text: str, encodings: list[str]) -> bool:
    """Whether ``text`` encodes in these encodings without replacement characters: in one
    of them, or (code extensions) each character in one of them."""
    if any(_encodable(text, e) for e in encodings):
        return True
    return len(encodings) > 1 and all(any(_encodable(ch, e) for e in encodings) for ch in text)


def element_value(vr: str, value: object) -> object:
    """An index value as the response element's value (pydicom's types for the VR)."""
    if value is None:
        return [] if vr == "SQ" else None
    if isinstance(value, list):
        return [str(v) for v in value] if vr not in ("US", "SS", "UL", "SL", "FL", "FD") else value
    if vr in ("US", "SS", "UL", "SL") and isinstance(value, str):
        return int(value) if value.isdigit() else None
    return value
