"""Storage Commitment (PS3.4 Annex J): is every referenced instance really held?

Each instance is looked up in the index and its stored bytes are read back and hashed the
way they were hashed on arrival (``services.digest``: transfer syntax + dataset bytes); only
an instance whose digest still matches the one recorded at store time is committed. A
quarantined instance (identity under reconciliation) is held, so it is committed too.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pacsnode.dicom.status import (
    CLASS_INSTANCE_CONFLICT,
    NO_SUCH_OBJECT_INSTANCE,
    PROCESSING_FAILURE,
)
from pacsnode.index.base import Index, InstanceRecord
from pacsnode.services.digest import part10_digest
from pacsnode.services.part10 import file_dataset
from pacsnode.storage.base import BlobStore

LOGGER = logging.getLogger(__name__)


@dataclass
class CommitmentResult:
    """``committed``: (class, instance) pairs held intact; ``failed``: (class, instance, reason)."""

    committed: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str, int]] = field(default_factory=list)


def stored_digest(blobs: BlobStore, record: InstanceRecord) -> str:
    """Re-read the stored Part 10 blob and hash it the way its recorded digest was made."""
    path = blobs.local_path(record.blob_id)
    source = file_dataset(path) if path is not None else blobs.read(record.blob_id)
    return part10_digest(source, record.transfer_syntax, like=record.digest)


def verify(index: Index, blobs: BlobStore, references: list[tuple[str, str]]) -> CommitmentResult:
    """Check each (SOP Class UID, SOP Instance UID) the requester asks us to commit."""
    result = CommitmentResult()
    held = index.get_instances([uid for _, uid in references])
    for class_uid, uid in references:
        record = held.get(uid)
        if record is None:
            result.failed.append((class_uid, uid, NO_SUCH_OBJECT_INSTANCE))
            continue
        if class_uid and record.sop_class_uid != class_uid:
            result.failed.append((class_uid, uid, CLASS_INSTANCE_CONFLICT))
            continue
        try:
            intact = stored_digest(blobs, record) == record.digest
        except Exception:  # unreadable blob: not committed, and worth a loud log line
            LOGGER.exception("storage commitment: cannot read back instance %s", uid)
            intact = False
        if intact:
            result.committed.append((class_uid, uid))
        else:
            LOGGER.error("storage commitment: instance %s does not match its recorded checksum", uid)
            result.failed.append((class_uid, uid, PROCESSING_FAILURE))
    return result
