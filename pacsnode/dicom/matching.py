"""C-FIND attribute matching (PS3.4 C.2.2.2): one matcher per query key, no I/O.

Values compared are as the index stores them: decoded text (multi-valued text keeps
DICOM's backslash), ints for binary VRs, lists for computed multi-valued keys.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable

_RANGE_VRS = {"DA", "TM", "DT"}
_NO_WILDCARD_VRS = {"DA", "TM", "DT", "UI", "US", "SS", "UL", "SL", "FL", "FD", "IS", "DS", "SQ"}


@dataclass(frozen=True)
class Matcher:
    keyword: str
    vr: str
    query: str
    test: Callable[[object], bool]
    # What an index may use to narrow the search before testing every record.
    exact: tuple[str, ...] | None = None  # any of these values
    prefix: str | None = None  # values starting with this (case-folded for PN)
    range: tuple[str | None, str | None] | None = None  # inclusive bounds (normalized)

    def __call__(self, value: object) -> bool:
        return self.test(value)


def _values(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    if isinstance(value, str):
        return value.split("\\")
    return [str(value)]


def normalize_pn(text: str) -> str:
    """Case-fold and drop trailing empty components, so 'Doe^John^^' == 'DOE^JOHN'."""
    groups = [re.sub(r"\^+$", "", g.strip()) for g in text.split("=")]
    while groups and not groups[-1]:
        groups.pop()
    return "=".join(groups).casefold()


def _pn_forms(value: str) -> list[str]:
    whole = normalize_pn(value)
    return [whole] + [g for g in whole.split("=") if g]


def normalize_time(text: str, upper: bool = False) -> str:
    """HH[MM[SS[.F{1,6}]]] (or HH:MM:SS) as a fixed-width sortable string."""
    text = text.replace(":", "").strip()
    main, _, frac = text.partition(".")
    fill = "595999" if upper else "000000"
    main = (main + fill[len(main):])[:6]
    frac = (frac + ("9" if upper else "0") * 6)[:6]
    return f"{main}.{frac}"


def normalize_datetime(text: str, upper: bool = False) -> str:
    """YYYY[MM[DD[HH[MM[SS[.F]]]]]][&ZZXX] as a fixed-width sortable string (offset ignored)."""
    text = re.sub(r"[+-]\d{4}$", "", text.strip())
    main, _, frac = text.partition(".")
    fill = "99991231235959" if upper else "00000101000000"
    main = (main + fill[len(main):])[:14]
    frac = (frac + ("9" if upper else "0") * 6)[:6]
    return f"{main}.{frac}"


def _normalizer(vr: str) -> Callable[[str, bool], str]:
    if vr == "TM":
        return normalize_time
    if vr == "DT":
        return normalize_datetime
    return lambda text, upper=False: text.replace(".", "").replace("-", "").strip()


def _wildcard_regex(pattern: str, fold: bool) -> re.Pattern[str]:
    parts = ["." if ch == "?" else ".*" if ch == "*" else re.escape(ch) for ch in pattern]
    return re.compile("".join(parts) + r"\Z", re.DOTALL | (re.IGNORECASE if fold else 0))


def build_matcher(keyword: str, vr: str, query: object) -> Matcher | None:
    """Return the matcher for one query key, or None for universal matching."""
    if query is None or vr == "SQ":
        return None
    # pydicom gives multi-valued keys as MultiValue, a Sequence but not a list.
    if isinstance(query, Sequence) and not isinstance(query, (str, bytes)):
        text = "\\".join(str(q) for q in query)
    else:
        text = str(query)
    if vr not in ("LT", "ST", "UT"):
        text = text.strip(" \x00")
    if text == "":
        return None
    if vr in _RANGE_VRS and _is_range(vr, text):
        return _range_matcher(keyword, vr, text)
    if vr == "UI":
        uids = tuple(u.strip() for u in text.split("\\") if u.strip())
        wanted = set(uids)
        return Matcher(keyword, vr, text, lambda v: any(x in wanted for x in _values(v)), exact=uids)
    # A backslash in a single-value query is a value list (PS3.4 C.2.2.2.8): any may match.
    alternatives = text.split("\\") if vr not in ("LT", "ST", "UT") else [text]
    tests = [_single_or_wildcard(vr, alt) for alt in alternatives]
    exact = None
    prefix = None
    if all(not _has_wildcard(vr, a) for a in alternatives):
        exact = tuple(normalize_pn(a) if vr == "PN" else a for a in alternatives)
    elif len(alternatives) == 1:
        head = re.split(r"[*?]", alternatives[0], maxsplit=1)[0]
        if head:
            prefix = normalize_pn(head) if vr == "PN" else head

    def test(value: object) -> bool:
        return any(t(value) for t in tests)

    return Matcher(keyword, vr, text, test, exact=exact, prefix=prefix)


def _has_wildcard(vr: str, text: str) -> bool:
    return vr not in _NO_WILDCARD_VRS and ("*" in text or "?" in text)


def _single_or_wildcard(vr: str, text: str) -> Callable[[object], bool]:
    if vr == "PN":
        if _has_wildcard(vr, text):
            rx = _wildcard_regex(normalize_pn(text) if text.strip("*?") else text, fold=True)
            return lambda v: any(rx.match(form) for s in _values(v) for form in _pn_forms(s)) or (
                text.strip("*") == "" and v is None
            )
        want = normalize_pn(text)
        return lambda v: any(want in _pn_forms(s) for s in _values(v))
    if _has_wildcard(vr, text):
        if text.strip("*") == "":
            return lambda v: True  # '*' alone matches everything, empty values included
        rx = _wildcard_regex(text, fold=False)
        return lambda v: any(rx.match(s) for s in _values(v))
    if vr in ("US", "SS", "UL", "SL", "IS"):
        try:
            number = int(text)
        except ValueError:
            return lambda v: False
        return lambda v: any(_as_int(s) == number for s in _values(v))
    if vr in ("FL", "FD", "DS"):
        try:
            real = float(text)
        except ValueError:
            return lambda v: False
        return lambda v: any(_as_float(s) == real for s in _values(v))
    if vr in ("TM", "DT", "DA"):
        norm = _normalizer(vr)
        lo, hi = norm(text, False), norm(text, True)
        return lambda v: any(lo <= norm(s, False) <= hi for s in _values(v) if s)
    return lambda v: any(s == text for s in _values(v))


def _as_int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _as_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _is_range(vr: str, text: str) -> bool:
    if vr != "DT":
        return "-" in text
    # A lone '-HHMM' after a DT value is a UTC offset, not a range.
    return "-" in text and not re.fullmatch(r"[\d.]+-\d{4}", text)


def _range_matcher(keyword: str, vr: str, text: str) -> Matcher:
    # DT values may carry a UTC offset with '-': split on the range dash only.
    if vr == "DT":
        m = re.match(r"^([^-]*(?:[-+]\d{4})?)?-(.*)$", text)
        low, high = (m.group(1) or "", m.group(2)) if m else (text, text)
    else:
        low, _, high = text.partition("-")
    norm = _normalizer(vr)
    lo = norm(low, False) if low.strip() else None
    hi = norm(high, True) if high.strip() else None

    def test(value: object) -> bool:
        for s in _values(value):
            if not s:
                continue
            lo_v, hi_v = norm(s, False), norm(s, True)
            if (lo is None or hi_v >= lo) and (hi is None or lo_v <= hi):
                return True
        return False

    return Matcher(keyword, vr, text, test, range=(lo, hi))
