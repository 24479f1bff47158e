"""What goes on the wire for a stored instance: its bytes as stored when the peer accepted
that transfer syntax, otherwise converted to an uncompressed syntax the peer accepted.

A large instance kept as a file of its own is not read here: it is sent from its file piece
by piece (ul.stream), so that a retrieval never holds a whole 1 GB multi-frame instance.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Collection

from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset

from pacsnode._native import header
from pacsnode.dicom.uids import EXPLICIT_VR_LE, IMPLICIT_VR_LE
from pacsnode.errors import PacsError
from pacsnode.services.part10 import FileDataset, file_dataset

if TYPE_CHECKING:
    from pacsnode.index.base import InstanceRecord
    from pacsnode.storage.base import BlobStore

# Instances kept as files of their own and larger than this are sent from their file.
STREAM_ABOVE = 16 * 1024 * 1024


_MAX_CONTEXTS = 128


def proposals_for(instances: list["InstanceRecord"]) -> list[tuple[str, list[str]]]:
    """Each stored syntax alone (so it is picked when supported), then an uncompressed
    fallback per SOP class, within the 128 contexts an association allows."""
    classes = list(dict.fromkeys(i.sop_class_uid for i in instances))
    exact = list(dict.fromkeys((i.sop_class_uid, i.transfer_syntax) for i in instances))
    fallback = [(c, [EXPLICIT_VR_LE, IMPLICIT_VR_LE]) for c in classes]
    return (fallback[: _MAX_CONTEXTS // 2] + [(c, [t]) for c, t in exact])[:_MAX_CONTEXTS]


def stored_dataset(blobs: "BlobStore", record: "InstanceRecord") -> bytes | FileDataset:
    """The stored Part 10 bytes, or where a large instance's dataset lies in its own file."""
    path = blobs.local_path(record.blob_id) if record.size > STREAM_ABOVE else None
    return blobs.read(record.blob_id) if path is None else file_dataset(path)


class NoAcceptedSyntaxError(PacsError):
    """The peer accepted neither the stored syntax nor one we can convert to."""

    dimse_status = 0xA702


def dataset_for_peer(
    part10: bytes | FileDataset, stored_syntax: str, accepted: Collection[str]
) -> tuple[str, bytes | memoryview | FileDataset]:
    """(transfer syntax, encoded dataset) to send; the stored bytes untouched when possible."""
    if isinstance(part10, FileDataset):
        if stored_syntax in accepted:
            return stored_syntax, part10
        part10 = part10.path.read_bytes()  # converting needs the whole of it
    _, offset = header.read_file_meta(part10)
    dataset = memoryview(part10)[offset:]
    if stored_syntax in accepted:
        return stored_syntax, dataset
    if EXPLICIT_VR_LE not in accepted and IMPLICIT_VR_LE not in accepted:
        raise NoAcceptedSyntaxError(f"peer accepts no syntax we can send {stored_syntax} data in")
    from pacsnode.pixels.decode import transcode_to_explicit_le

    explicit = dataset if stored_syntax == EXPLICIT_VR_LE else transcode_to_explicit_le(dataset, stored_syntax)
    if EXPLICIT_VR_LE in accepted:
        return EXPLICIT_VR_LE, explicit
    ds = read_dataset(DicomBytesIO(bytes(explicit)), False, True)
    out = DicomBytesIO()
    out.is_implicit_VR, out.is_little_endian = True, True
    write_dataset(out, ds)
    return IMPLICIT_VR_LE, out.getvalue()
