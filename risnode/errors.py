"""Errors raised across risnode; each knows how it is answered (HL7 ACK, DIMSE status, HTTP)."""
from __future__ import annotations

from pacsnode.config import ConfigError

__all__ = ["ConfigError", "RisError", "Hl7Error", "NotFound", "Conflict", "InvalidRequest", "MppsError", "FramingError"]

# HL7 table 0357 (message error condition codes) used in ERR-3.
REQUIRED_FIELD_MISSING = 101
DATA_TYPE_ERROR = 102
TABLE_VALUE_NOT_FOUND = 103
SEGMENT_SEQUENCE_ERROR = 100
UNSUPPORTED_MESSAGE_TYPE = 200
UNSUPPORTED_EVENT_CODE = 201
UNSUPPORTED_PROCESSING_ID = 202
UNSUPPORTED_VERSION_ID = 203
UNKNOWN_KEY_IDENTIFIER = 204
DUPLICATE_KEY_IDENTIFIER = 205
APPLICATION_INTERNAL_ERROR = 207

ERROR_TEXT = {
    SEGMENT_SEQUENCE_ERROR: "Segment sequence error",
    REQUIRED_FIELD_MISSING: "Required field missing",
    DATA_TYPE_ERROR: "Data type error",
    TABLE_VALUE_NOT_FOUND: "Table value not found",
    UNSUPPORTED_MESSAGE_TYPE: "Unsupported message type",
    UNSUPPORTED_EVENT_CODE: "Unsupported event code",
    UNSUPPORTED_PROCESSING_ID: "Unsupported processing id",
    UNSUPPORTED_VERSION_ID: "Unsupported version id",
    UNKNOWN_KEY_IDENTIFIER: "Unknown key identifier",
    DUPLICATE_KEY_IDENTIFIER: "Duplicate key identifier",
    APPLICATION_INTERNAL_ERROR: "Application internal error",
}


class RisError(Exception):
    """Base class; ``http_status`` for the REST API."""

    http_status = 400


class Hl7Error(RisError):
    """An inbound message answered with AE (valid HL7, unusable content) or AR (not accepted).

    ``location`` names the field as ``SEG-FIELD`` or ``SEG-FIELD.COMPONENT`` (e.g. ``PID-3``);
    ``code`` is from HL7 table 0357.
    """

    def __init__(self, text: str, location: str = "", code: int = APPLICATION_INTERNAL_ERROR, ack_code: str = "AE") -> None:
        super().__init__(text)
        self.text = text
        self.location = location
        self.code = code
        self.ack_code = ack_code

    @classmethod
    def missing(cls, location: str, what: str) -> "Hl7Error":
        return cls(f"{location} ({what}) is required", location, REQUIRED_FIELD_MISSING)

    @classmethod
    def unknown(cls, location: str, what: str) -> "Hl7Error":
        return cls(f"unknown {what}", location, UNKNOWN_KEY_IDENTIFIER)

    @classmethod
    def reject(cls, text: str, location: str = "", code: int = UNSUPPORTED_MESSAGE_TYPE) -> "Hl7Error":
        return cls(text, location, code, ack_code="AR")


class NotFound(RisError):
    http_status = 404


class Conflict(RisError):
    """The request is valid but the order's state does not allow it (e.g. a status change)."""

    http_status = 409


class InvalidRequest(RisError):
    http_status = 400


class MppsError(RisError):
    """An MPPS request refused with a PS3.4 Annex F status; ``comment`` is at most 64 chars."""

    def __init__(self, status: int, comment: str) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment[:64]


class FramingError(RisError):
    """Bytes that are not MLLP: data outside a block, a block start inside a block."""
