"""Ingest: scan the encoded dataset natively, keep it byte for byte, index it, then acknowledge.

``prepare`` (scan, validate, checksum) runs in the receiving thread; the durable part runs
in the group committer, which shares one fdatasync and one index transaction among all
instances that arrived meanwhile. ``store`` returns only once the instance is durable.
"""
from __future__ import annotations

import logging
import os
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from pacsnode._native import header
from pacsnode.dicom.attributes import INDEXED, SCAN_TAGS, TAG_SPECIFIC_CHARACTER_SET, charset_encodings, decode_value
from pacsnode.dicom.meta import build_file_meta
from pacsnode.dicom.syntax import encoding_of, inflated
from pacsnode.errors import MissingAttributeError
from pacsnode.index.base import InstanceRecord
from pacsnode.services.digest import chunks_digest

LOGGER = logging.getLogger(__name__)

# Asking for a tag no dataset holds makes the scanner walk (and so validate) every element.
_WALK_ALL = SCAN_TAGS + (0xFFFFFFFF,)
_REQUIRED = ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID")

STORED, DUPLICATE, REPLACED = "stored", "duplicate", "replaced"


@dataclass
class StoreOutcome:
    result: str  # STORED, DUPLICATE (identical content already held) or REPLACED
    record: InstanceRecord


@dataclass
class PendingInstance:
    """A scanned, validated instance on its way to the committer."""

    record: InstanceRecord
    # The Part 10 bytes as chunks (file meta, dataset), or a spooled file holding them.
    chunks: list[bytes | memoryview] | None = None
    spooled: Path | None = None
    future: Future = field(default_factory=Future)


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
    def __init__(self, committer, identity=None) -> None:
        self.committer = committer
        # services.identity.IdentityChecker, or None: no identity check on store.
        self.identity = identity

    def prepare(
        self,
        dataset: bytes | memoryview,
        transfer_syntax: str,
        sop_class_uid: str | None = None,
        sop_instance_uid: str | None = None,
        source_ae: str | None = None,
        *,
        digest: str | None = None,
        spooled: Path | None = None,
        check_identity: bool = True,
    ) -> PendingInstance:
        """Scan and validate one encoded dataset (without File Meta).

        ``spooled``: the dataset is already in this file behind the file meta built from the
        request's UIDs (a large instance received in pieces), and ``digest`` its content digest.
        The identity check (if configured) may coerce the header (re-encoded, recorded) or
        mark the instance for quarantine.
        """
        attrs = index_attributes(dataset, transfer_syntax)
        for kw in _REQUIRED:
            if not attrs.get(kw):
                raise MissingAttributeError(f"{kw} is missing or empty")
        for kw, announced in (("SOPClassUID", sop_class_uid), ("SOPInstanceUID", sop_instance_uid)):
            if announced and attrs[kw] != announced.strip("\x00 "):
                raise MissingAttributeError(f"{kw} differs from the request's Affected {kw}")
        decision = self.identity.check(attrs, source_ae) if check_identity and self.identity is not None else None
        if decision is not None and decision.changes:
            from pacsnode.services.identity import recode_dataset

            dataset = recode_dataset(dataset, transfer_syntax, decision.changes, "COERCE")
            attrs = index_attributes(dataset, transfer_syntax)
            digest = None
            if spooled is not None:
                spooled = self._respool(spooled, dataset, attrs, transfer_syntax, source_ae)
        if digest is None:
            digest = chunks_digest([dataset], transfer_syntax)
        record = InstanceRecord(
            sop_instance_uid=attrs["SOPInstanceUID"],
            sop_class_uid=attrs["SOPClassUID"],
            series_uid=attrs["SeriesInstanceUID"],
            study_uid=attrs["StudyInstanceUID"],
            patient_key=attrs.get("PatientID") or "",
            transfer_syntax=transfer_syntax,
            blob_id="",
            size=len(dataset),
            digest=digest,
            attrs=attrs,
            stored_at=time.time(),
            identity=decision.note if decision is not None else None,
        )
        if spooled is not None:
            return PendingInstance(record, spooled=spooled)
        meta = build_file_meta(record.sop_class_uid, record.sop_instance_uid, transfer_syntax, source_ae)
        return PendingInstance(record, chunks=[meta, dataset])

    def _respool(self, old: Path, dataset: bytes, attrs: dict, transfer_syntax: str, source_ae: str | None) -> Path:
        """A coerced large instance: its new bytes go to a fresh spool file (fsync'd)."""
        new = self.committer.blobs.spool_path()
        meta = build_file_meta(attrs["SOPClassUID"], attrs["SOPInstanceUID"], transfer_syntax, source_ae)
        with open(new, "wb") as fh:
            fh.write(meta)
            fh.write(dataset)
            fh.flush()
            os.fsync(fh.fileno())
        old.unlink(missing_ok=True)
        return new

    def store(
        self,
        dataset: bytes | memoryview,
        transfer_syntax: str,
        sop_class_uid: str | None = None,
        sop_instance_uid: str | None = None,
        source_ae: str | None = None,
    ) -> StoreOutcome:
        """Store one encoded dataset; returns once it is durable and indexed."""
        pending = self.prepare(dataset, transfer_syntax, sop_class_uid, sop_instance_uid, source_ae)
        return self.committer.submit(pending).result()
