"""Ingest: scan the encoded dataset natively, keep it byte for byte, index it, then acknowledge."""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass

from pacsnode._native import header
from pacsnode.dicom.attributes import INDEXED, SCAN_TAGS, TAG_SPECIFIC_CHARACTER_SET, charset_encodings, decode_value
from pacsnode.dicom.meta import build_file_meta
from pacsnode.dicom.syntax import encoding_of, inflated
from pacsnode.errors import DuplicateInstanceError, MissingAttributeError
from pacsnode.index.base import Index, InstanceRecord
from pacsnode.storage.base import BlobStore, new_blob_id

LOGGER = logging.getLogger(__name__)

# Asking for a tag no dataset holds makes the scanner walk (and so validate) every element.
_WALK_ALL = SCAN_TAGS + (0xFFFFFFFF,)
_REQUIRED = ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID")

STORED, DUPLICATE, REPLACED = "stored", "duplicate", "replaced"


@dataclass
class StoreOutcome:
    result: str  # STORED, DUPLICATE (identical content already held) or REPLACED
    record: InstanceRecord


def index_attributes(dataset: bytes | memoryview, transfer_syntax: str) -> dict:
    """Decode the indexed attributes of an encoded dataset (no pixel data is read)."""
    implicit, little = encoding_of(transfer_syntax)
    raw = header.scan_dataset(inflated(dataset, transfer_syntax), _WALK_ALL, implicit, little)
    encodings = charset_encodings(raw.get(TAG_SPECIFIC_CHARACTER_SET))
    attrs = {}
    for kw, (tag, vr) in INDEXED.items():
        value = raw.get(tag)
        if value is not None:
            attrs[kw] = decode_value(value, vr, encodings, little)
    return attrs


class StoreService:
    def __init__(self, index: Index, blobs: BlobStore, duplicate_policy: str = "reject") -> None:
        self.index = index
        self.blobs = blobs
        self.duplicate_policy = duplicate_policy

    def store(
        self,
        dataset: bytes | memoryview,
        transfer_syntax: str,
        sop_class_uid: str | None = None,
        sop_instance_uid: str | None = None,
        source_ae: str | None = None,
    ) -> StoreOutcome:
        """Store one encoded dataset (without File Meta); returns once it is durable and indexed."""
        attrs = index_attributes(dataset, transfer_syntax)
        for kw in _REQUIRED:
            if not attrs.get(kw):
                raise MissingAttributeError(f"{kw} is missing or empty")
        for kw, announced in (("SOPClassUID", sop_class_uid), ("SOPInstanceUID", sop_instance_uid)):
            if announced and attrs[kw] != announced.strip("\x00 "):
                raise MissingAttributeError(f"{kw} differs from the request's Affected {kw}")

        digest = hashlib.sha256(transfer_syntax.encode() + b"\x00")
        digest.update(dataset)
        record = InstanceRecord(
            sop_instance_uid=attrs["SOPInstanceUID"],
            sop_class_uid=attrs["SOPClassUID"],
            series_uid=attrs["SeriesInstanceUID"],
            study_uid=attrs["StudyInstanceUID"],
            patient_key=attrs.get("PatientID") or "",
            transfer_syntax=transfer_syntax,
            blob_id=new_blob_id(),
            size=len(dataset),
            sha256=digest.hexdigest(),
            attrs=attrs,
            stored_at=time.time(),
        )
        existing = self.index.get_instance(record.sop_instance_uid)
        if existing is not None:
            return self._duplicate(existing, record, dataset, source_ae)

        meta = build_file_meta(record.sop_class_uid, record.sop_instance_uid, transfer_syntax, source_ae)
        self.blobs.put(record.blob_id, [meta, dataset])
        added = self.index.add_instance(record)
        if not added.added:  # another association stored the same UID meanwhile
            self.blobs.delete(record.blob_id)
            return self._duplicate(added.existing, record, dataset, source_ae)
        return StoreOutcome(STORED, record)

    def _duplicate(
        self, existing: InstanceRecord, record: InstanceRecord, dataset: bytes | memoryview, source_ae: str | None
    ) -> StoreOutcome:
        if existing.sha256 == record.sha256:
            return StoreOutcome(DUPLICATE, existing)
        moved = (existing.study_uid, existing.series_uid) != (record.study_uid, record.series_uid)
        if self.duplicate_policy != "replace" or moved:
            # A replacement may correct an instance, never move it to another series or patient.
            LOGGER.warning("rejected different content for stored SOP Instance %s", record.sop_instance_uid)
            raise DuplicateInstanceError("SOP Instance UID already stored with other content")
        meta = build_file_meta(record.sop_class_uid, record.sop_instance_uid, record.transfer_syntax, source_ae)
        self.blobs.put(record.blob_id, [meta, dataset])
        old = self.index.replace_instance(record)
        self.blobs.delete(old.blob_id)
        LOGGER.info("replaced SOP Instance %s with new content", record.sop_instance_uid)
        return StoreOutcome(REPLACED, record)
