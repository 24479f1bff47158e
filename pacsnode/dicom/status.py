"""DIMSE status codes (PS3.7 Annex C, PS3.4), named as the standard names them."""
from pydicom import Dataset

SUCCESS = 0x0000
PENDING = 0xFF00
CANCEL = 0xFE00

# General (PS3.7 C.4-C.5)
INVALID_ATTRIBUTE_VALUE = 0x0106
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
NO_SUCH_OBJECT_INSTANCE = 0x0112
NO_SUCH_ARGUMENT = 0x0114
INVALID_ARGUMENT_VALUE = 0x0115
CLASS_INSTANCE_CONFLICT = 0x0119
MISSING_ATTRIBUTE = 0x0120
NO_SUCH_ACTION = 0x0123
UNRECOGNIZED_OPERATION = 0x0211

# Storage and Query/Retrieve (PS3.4 B.2.3, C.4)
OUT_OF_RESOURCES = 0xA700
UNABLE_TO_PERFORM_SUBOPERATIONS = 0xA702  # out of resources
MOVE_DESTINATION_UNKNOWN = 0xA801
DOES_NOT_MATCH_SOP_CLASS = 0xA900  # data set (storage) or identifier (query)
SUBOPERATIONS_WITH_FAILURES = 0xB000  # warning: sub-operations complete, some failed
CANNOT_UNDERSTAND = 0xC000  # storage
UNABLE_TO_PROCESS = 0xC000  # query/retrieve
TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122  # STOW-RS failure reason (PS3.18)


def status_dataset(code: int, comment: str | None = None, error_id: int | None = None) -> Dataset:
    """A status for a pynetdicom handler to return: Status, Error Comment (at most 64
    characters, PS3.7 C.4) and Error ID when given."""
    ds = Dataset()
    ds.Status = code
    if comment:
        ds.ErrorComment = comment[:64]
    if error_id is not None:
        ds.ErrorID = error_id
    return ds
