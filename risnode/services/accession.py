"""Accession numbers from a pattern: {YYYY} {YY} {MM} {DD} and one {SEQ:n}.

The counter runs per rendered prefix, so a pattern with a date restarts each day; it is
kept in LMDB, and a number already taken (e.g. carried by an earlier order) is skipped.
"""
from __future__ import annotations

import re
from datetime import datetime
from typing import Callable

from risnode.errors import ConfigError, RisError

MAX_LENGTH = 16  # DICOM SH
_TOKEN = re.compile(r"\{(YYYY|YY|MM|DD|SEQ:(\d{1,2}))\}")
_LITERAL = re.compile(r"^[A-Za-z0-9._-]*$")


def check_pattern(pattern: str) -> None:
    seqs = [m for m in _TOKEN.finditer(pattern) if m.group(2)]
    if len(seqs) != 1:
        raise ConfigError(f"accession_pattern {pattern!r}: needs exactly one {{SEQ:n}}")
    if not _LITERAL.match(_TOKEN.sub("", pattern)):
        raise ConfigError(f"accession_pattern {pattern!r}: literal text may use A-Z a-z 0-9 . _ - only")
    digits = int(seqs[0].group(2))
    if not 1 <= digits <= MAX_LENGTH or len(_render(pattern, datetime(2000, 1, 1), 0, digits)) > MAX_LENGTH:
        raise ConfigError(f"accession_pattern {pattern!r}: renders longer than {MAX_LENGTH} characters")


def _render(pattern: str, day: datetime, number: int | None, digits: int) -> str:
    def token(m: re.Match) -> str:
        name = m.group(1)
        if m.group(2):
            return "{SEQ}" if number is None else f"{number:0{digits}d}"
        return {"YYYY": f"{day:%Y}", "YY": f"{day:%y}", "MM": f"{day:%m}", "DD": f"{day:%d}"}[name]

    return _TOKEN.sub(token, pattern)


def next_accession(pattern: str, now: datetime, counter: Callable[[str], int], taken: Callable[[str], bool]) -> str:
    """``counter(key)`` returns the next number for key; ``taken(acc)`` says it is in use."""
    digits = int(next(m.group(2) for m in _TOKEN.finditer(pattern) if m.group(2)))
    key = "accession/" + _render(pattern, now, None, digits)
    while True:
        accession = _render(pattern, now, counter(key), digits)
        if len(accession) > MAX_LENGTH:
            raise RisError(f"accession numbers for {key[10:]} exhausted: widen {{SEQ:n}} in accession_pattern")
        if not taken(accession):
            return accession
