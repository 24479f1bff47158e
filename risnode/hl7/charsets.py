"""Character sets: HL7 MSH-18 (table 0211) <-> Python codec <-> DICOM Specific Character Set.

Only single-byte ISO 8859 sets, UTF-8 and GB 18030 are mapped: they need no ISO 2022
escape handling on either side. ``None`` as the DICOM term means the default repertoire.
"""
from __future__ import annotations

# MSH-18 value: (Python codec, DICOM Specific Character Set defined term)
_SETS: dict[str, tuple[str, str | None]] = {
    "ASCII": ("ascii", None),
    "8859/1": ("latin_1", "ISO_IR 100"),
    "8859/2": ("iso8859_2", "ISO_IR 101"),
    "8859/3": ("iso8859_3", "ISO_IR 109"),
    "8859/4": ("iso8859_4", "ISO_IR 110"),
    "8859/5": ("iso8859_5", "ISO_IR 144"),
    "8859/6": ("iso8859_6", "ISO_IR 127"),
    "8859/7": ("iso8859_7", "ISO_IR 126"),
    "8859/8": ("iso8859_8", "ISO_IR 138"),
    "8859/9": ("iso8859_9", "ISO_IR 148"),
    "8859/15": ("iso8859_15", "ISO_IR 203"),
    "UNICODE UTF-8": ("utf_8", "ISO_IR 192"),
    "GB 18030-2000": ("gb18030", "GB18030"),
}
_BY_DICOM = {dicom: hl7 for hl7, (_, dicom) in _SETS.items() if dicom}
UTF8 = "UNICODE UTF-8"


def supported() -> list[str]:
    return list(_SETS)


def codec(msh18: str) -> str | None:
    """The Python codec for an MSH-18 value, or None when we do not support it."""
    entry = _SETS.get(msh18.strip().upper())
    return entry[0] if entry else None


def dicom_term(msh18: str) -> str | None:
    entry = _SETS.get(msh18.strip().upper())
    return entry[1] if entry else None


def hl7_name(dicom: str | None) -> str:
    return _BY_DICOM.get(dicom or "", "ASCII")


def guess(raw: bytes) -> str:
    """MSH-18 for a message that names none: ASCII if it is, else UTF-8 if it decodes, else
    Latin-1 (the sets senders use in practice when they leave MSH-18 empty)."""
    if raw.isascii():
        return "ASCII"
    try:
        raw.decode("utf-8")
        return UTF8
    except UnicodeDecodeError:
        return "8859/1"


def dicom_term_for(texts: list[str], preferred: str | None) -> str | None:
    """The DICOM term to answer with: the one the data came in when it can encode every
    text, else ISO_IR 192 (UTF-8); None for plain ASCII."""
    joined = "".join(texts)
    if joined.isascii():
        return None
    if preferred:
        codec_name = _SETS[hl7_name(preferred)][0]
        try:
            joined.encode(codec_name)
            return preferred
        except (UnicodeEncodeError, KeyError):
            pass
    return "ISO_IR 192"
