"""Errors raised across pacsnode; each knows the DIMSE status it maps to."""


class PacsError(Exception):
    """Base class: ``dimse_status`` and a short ``comment`` (<= 64 chars) for the peer."""

    dimse_status = 0xC000  # Cannot understand

    @property
    def comment(self) -> str:
        return str(self)[:64]


class MalformedDatasetError(PacsError, ValueError):
    """The encoded dataset cannot be parsed (truncated, bad length, bad item)."""

    dimse_status = 0xC000


class MissingAttributeError(PacsError):
    """A required attribute (e.g. SOP Instance UID) is absent or empty."""

    dimse_status = 0xA900  # Data set does not match SOP class


class DuplicateInstanceError(PacsError):
    """A different dataset is already stored under this SOP Instance UID."""

    dimse_status = 0x0111  # Duplicate SOP instance


class OutOfResourcesError(PacsError):
    """The disk or the index map is full."""

    dimse_status = 0xA700


class InvalidQueryError(PacsError):
    """The C-FIND/C-MOVE/C-GET identifier is unusable (level, keys)."""

    dimse_status = 0xA900  # Identifier does not match SOP Class


class ReconciliationError(PacsError):
    """A reconciliation request that cannot be applied as asked (HTTP 400)."""

    http_status = 400


class UnknownItemError(ReconciliationError):
    """No such reconciliation item or order (HTTP 404)."""

    http_status = 404


class AlreadyResolvedError(ReconciliationError):
    """The item is no longer open (HTTP 409)."""

    http_status = 409
