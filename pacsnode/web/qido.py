"""QIDO-RS (PS3.18 10.6): search studies, series and instances, answered in DICOM JSON.

The query parameters become a C-FIND identifier (a pydicom Dataset) and matching is C-FIND's
own (``services.query.build_matchers`` over ``index.find``): same keys, same wildcard, range,
list and case rules. When every key to return is in the index (the defaults are) the answer
is written from the index views without opening a file; keys the index does not hold (an
``includefield`` of some other attribute) go through ``archive.query.find``, which reads them
from the entity's first stored instance exactly as C-FIND does.
"""
from __future__ import annotations

import itertools
import re
import warnings

from aiohttp import web
from pydicom import Dataset
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement

from pacsnode.dicom.attributes import COMPUTED_KEYS, LEVEL_ATTRIBUTES, LEVELS, key_level, levels_up_to
from pacsnode.errors import PacsError
from pacsnode.services.query import build_matchers
from pacsnode.web.app import ARCHIVE, DICOMWEB_ROOT, base_url, run_blocking
from pacsnode.web.dicomjson import dumps, element_json, tag_hex, view_json
from pacsnode.web.media import accepts_json, parse_accept

# PS3.18 Tables 10.6.3-3 to -5 (Timezone Offset and Request Attribute Sequence are not indexed
# and are returned only when asked), plus the attributes viewers show in their lists.
STUDY_DEFAULTS = (
    "StudyDate", "StudyTime", "AccessionNumber", "InstanceAvailability", "ModalitiesInStudy",
    "ReferringPhysicianName", "RetrieveURL", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
    "StudyInstanceUID", "StudyID", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
    "StudyDescription",
)  # fmt: skip
SERIES_DEFAULTS = (
    "Modality", "SeriesDescription", "RetrieveURL", "SeriesInstanceUID", "SeriesNumber",
    "NumberOfSeriesRelatedInstances", "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
    "StudyInstanceUID", "SeriesDate", "SeriesTime",
)  # fmt: skip
INSTANCE_DEFAULTS = (
    "SOPClassUID", "SOPInstanceUID", "InstanceAvailability", "RetrieveURL", "InstanceNumber", "Rows",
    "Columns", "BitsAllocated", "NumberOfFrames", "StudyInstanceUID", "SeriesInstanceUID",
)  # fmt: skip
DEFAULTS = {"STUDY": STUDY_DEFAULTS, "SERIES": SERIES_DEFAULTS, "IMAGE": INSTANCE_DEFAULTS}

_CONTROL = {"includefield", "fuzzymatching", "limit", "offset", "orderby", "_", "charset"}
_SPECIAL = {"RetrieveURL", "InstanceAvailability", "RetrieveAETitle"}
_TAG_RE = re.compile(r"^[0-9A-Fa-f]{8}$")
MAX_LIMIT = 100_000


class QidoQuery:
    """A parsed QIDO request: the identifier, the keys to return and the paging."""

    def __init__(self, level: str, scope: dict[str, str], params, fuzzy_default: bool = False) -> None:
        self.level = level
        self.scope = scope
        self.matching: dict[str, str] = {}
        self.includes: list[str] = []
        self.include_all = False
        self.fuzzy = fuzzy_default
        self.limit: int | None = None
        self.offset = 0
        self._parse(params)

    def _parse(self, params) -> None:
        values: dict[str, list[str]] = {}
        for name, value in params.items():
            lname = name.lower()
            if lname == "includefield":
                for item in re.split(r"[,\s]+", value.strip()):
                    if not item:
                        continue
                    if item.lower() == "all":
                        self.include_all = True
                    else:
                        self.includes.append(_keyword(item))
            elif lname == "fuzzymatching":
                self.fuzzy = value.strip().lower() == "true"
            elif lname in ("limit", "offset"):
                try:
                    number = int(value)
                except ValueError:
                    raise web.HTTPBadRequest(text=f"{name}={value!r} is not a number") from None
                if number < 0:
                    raise web.HTTPBadRequest(text=f"{name} must not be negative")
                if lname == "limit":
                    self.limit = min(number, MAX_LIMIT) if number else None
                else:
                    self.offset = number
            elif lname in _CONTROL:
                continue
            else:
                if "." in name:
                    raise web.HTTPBadRequest(text=f"sequence matching ({name}) is not supported")
                values.setdefault(_keyword(name), []).append(value)
        for kw, vals in values.items():
            if kw in self.scope:
                continue  # the path's UID wins
            self.matching[kw] = "\\".join(vals)
        self.matching.update(self.scope)

    def return_keys(self) -> list[str]:
        allowed = LEVELS[1 : LEVELS.index(self.level) + 1]  # study root: no separate patient level
        keys: list[str] = []
        # Unscoped series and instance searches also return the defaults of the levels above.
        for lvl, defaults in (("STUDY", STUDY_DEFAULTS), ("SERIES", SERIES_DEFAULTS), ("IMAGE", INSTANCE_DEFAULTS)):
            if lvl not in allowed:
                continue
            if lvl == self.level or (lvl == "STUDY" and "StudyInstanceUID" not in self.scope) or (
                lvl == "SERIES" and "SeriesInstanceUID" not in self.scope
            ):
                keys.extend(defaults)
        if self.include_all:
            for lvl in ("PATIENT", *allowed):
                keys.extend(LEVEL_ATTRIBUTES[lvl])
            keys.extend(k for k, lvl in COMPUTED_KEYS.items() if lvl in ("PATIENT", *allowed))
        keys.extend(self.includes)
        keys.extend(self.matching)
        return list(dict.fromkeys(keys))

    def identifier(self, return_keys: list[str]) -> Dataset:
        ds = Dataset()
        ds.QueryRetrieveLevel = self.level
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for kw in return_keys:
                if kw in _SPECIAL:
                    continue
                tag = tag_for_keyword(kw)
                vr = dictionary_VR(tag)
                value = self.matching.get(kw)
                if value is not None:
                    value = _query_value(kw, vr, value, self.fuzzy)
                try:
                    ds.add(DataElement(tag, vr, value if value not in (None, "") else None))
                    _ = ds[tag].value
                except Exception as exc:
                    raise web.HTTPBadRequest(text=f"{kw}={value!r}: {exc}") from None
        return ds


def _keyword(name: str) -> str:
    """A query key or includefield item (keyword or 8-hex tag) as a dictionary keyword."""
    name = name.strip()
    if _TAG_RE.match(name):
        kw = keyword_for_tag(int(name, 16))
    else:
        kw = name if tag_for_keyword(name) is not None else None
    if not kw:
        raise web.HTTPBadRequest(text=f"unknown attribute {name!r}")
    return kw


def _query_value(kw: str, vr: str, value: str, fuzzy: bool) -> str:
    value = value.strip()
    if vr == "UI":
        return value.replace(",", "\\")  # PS3.18 8.3.4.1: UID lists may be comma separated
    if vr == "PN" and fuzzy and value and "*" not in value and "?" not in value:
        # Fuzzy: the value starts any name component (case never matters for PN here).
        return f"{value}*\\*^{value}*"
    return value


def _fast(keys: list[str], level: str) -> bool:
    """Whether the index holds every key to return (no file is read)."""
    allowed = levels_up_to(level)
    for kw in keys:
        if kw in _SPECIAL:
            continue
        if key_level(kw) not in allowed:
            return False
    return True


def _retrieve_url(base: str, level: str, view: dict) -> str:
    url = f"{base}/studies/{view.get('StudyInstanceUID')}"
    if level in ("SERIES", "IMAGE"):
        url += f"/series/{view.get('SeriesInstanceUID')}"
    if level == "IMAGE":
        url += f"/instances/{view.get('SOPInstanceUID')}"
    return url


def _special(kw: str, archive, base: str, level: str, view: dict) -> dict:
    if kw == "RetrieveURL":
        return element_json("UR", _retrieve_url(base, level, view))
    if kw == "InstanceAvailability":
        return element_json("CS", "ONLINE")
    return element_json("AE", archive.config.ae_title)


def run_query(archive, query: QidoQuery, base: str) -> list[dict]:
    """The JSON objects of the matches (runs in the loop for index-only answers)."""
    keys = query.return_keys()
    identifier = query.identifier(keys)
    specials = [kw for kw in keys if kw in _SPECIAL]
    stop = None if query.limit is None else query.offset + query.limit
    out: list[dict] = []
    if _fast(keys, query.level):
        plain = [kw for kw in keys if kw not in _SPECIAL]
        matchers = build_matchers(identifier, query.level)
        for view in itertools.islice(archive.index.find(query.level, matchers), query.offset, stop):
            extra = {tag_hex(tag_for_keyword(kw)): _special(kw, archive, base, query.level, view) for kw in specials}
            out.append(view_json(view, plain, extra))
        return out
    # C-FIND's own path, for keys read from the stored files.
    for rsp in itertools.islice(archive.query.find(identifier, "STUDY"), query.offset, stop):
        view = {kw: str(rsp.get(kw, "") or "") for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")}
        del rsp.QueryRetrieveLevel
        if "SpecificCharacterSet" in rsp:
            del rsp.SpecificCharacterSet
        obj = rsp.to_json_dict()
        for kw in specials:
            obj[tag_hex(tag_for_keyword(kw))] = _special(kw, archive, base, query.level, view)
        out.append(dict(sorted(obj.items())))
    return out


def _handler(level: str, scoped: tuple[str, ...]):
    async def handler(request: web.Request) -> web.Response:
        if not accepts_json(parse_accept(request.headers.get("Accept"))):
            raise web.HTTPNotAcceptable(text="QIDO-RS answers in application/dicom+json only")
        scope = {kw: request.match_info[kw] for kw in scoped}
        query = QidoQuery(level, scope, request.query)
        archive = request.app[ARCHIVE]
        keys = query.return_keys()
        try:
            if _fast(keys, level):
                results = run_query(archive, query, base_url(request))
            else:
                results = await run_blocking(request, run_query, archive, query, base_url(request))
        except PacsError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        return web.Response(body=dumps(results), content_type="application/dicom+json")

    return handler


def add_routes(app: web.Application) -> None:
    root = DICOMWEB_ROOT
    app.router.add_get(root + "/studies", _handler("STUDY", ()))
    app.router.add_get(root + "/series", _handler("SERIES", ()))
    app.router.add_get(root + "/instances", _handler("IMAGE", ()))
    app.router.add_get(root + "/studies/{StudyInstanceUID}/series", _handler("SERIES", ("StudyInstanceUID",)))
    app.router.add_get(root + "/studies/{StudyInstanceUID}/instances", _handler("IMAGE", ("StudyInstanceUID",)))
    app.router.add_get(
        root + "/studies/{StudyInstanceUID}/series/{SeriesInstanceUID}/instances",
        _handler("IMAGE", ("StudyInstanceUID", "SeriesInstanceUID")),
    )
