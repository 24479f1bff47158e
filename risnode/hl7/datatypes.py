"""HL7 v2 data types to and from DICOM: DTM, XPN/XCN person names, priorities."""
from __future__ import annotations

import re
from datetime import datetime

_DTM = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.\d+)?(?:[+-]\d{4})?$")
# TQ priority (HL7 table 0027) -> DICOM Requested Procedure Priority.
PRIORITIES = {"S": "STAT", "A": "HIGH", "P": "HIGH", "C": "HIGH", "T": "HIGH", "R": "ROUTINE"}


def parse_dtm(text: str) -> datetime | None:
    """YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ] as a naive local datetime (offset dropped)."""
    m = _DTM.match(text.strip())
    if not m:
        return None
    parts = [int(p) if p else d for p, d in zip(m.groups(), (0, 1, 1, 0, 0, 0))]
    try:
        return datetime(*parts)
    except ValueError:
        return None


def format_dtm(value: datetime) -> str:
    return value.strftime("%Y%m%d%H%M%S")


def dicom_date(text: str) -> str:
    """The YYYYMMDD prefix of an HL7 date/time, or "" when it is not one."""
    text = text.strip()
    return text[:8] if re.match(r"^\d{8}", text) else ""


def xpn_to_pn(components: list[str]) -> str:
    """XPN family^given^middle^suffix^prefix -> DICOM PN family^given^middle^prefix^suffix."""
    c = (components + [""] * 5)[:5]
    return "^".join([c[0], c[1], c[2], c[4], c[3]]).rstrip("^")


def xcn_to_pn(components: list[str]) -> str:
    """XCN id^family^given^middle^suffix^prefix -> DICOM PN."""
    return xpn_to_pn(components[1:6])


def pn_to_xpn(pn: str) -> list[str]:
    c = (pn.split("=")[0].split("^") + [""] * 5)[:5]
    return [c[0], c[1], c[2], c[4], c[3]]


def sex(value: str) -> str:
    """HL7 administrative sex -> DICOM Patient's Sex (M, F, O or empty)."""
    value = value.strip().upper()[:1]
    return value if value in ("M", "F") else ("O" if value in ("O", "A", "N") else "")
