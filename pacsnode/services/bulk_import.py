"""Bulk import: a folder tree of DICOM files (or a DICOMDIR) through the normal ingest path.

Files are read and scanned by a pool of threads (the scanner, hashing and file reads
release the GIL) and made durable by the group committer, many instances per commit.
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from pacsnode._native import header
from pacsnode.errors import PacsError
from pacsnode.services.archive import Archive
from pacsnode.services.store import DUPLICATE

LOGGER = logging.getLogger(__name__)

_MEDIA_STORAGE_SOP_CLASS = 0x00020002
_TRANSFER_SYNTAX = 0x00020010
_MEDIA_DIRECTORY = b"1.2.840.10008.1.3.10"


@dataclass
class ImportSummary:
    counts: Counter = field(default_factory=Counter)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def dicom_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Every file under the given files and folders; a DICOMDIR yields the files it lists."""
    for path in paths:
        if path.is_dir():
            for folder, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    if name.upper() != "DICOMDIR":  # its files are found by the walk itself
                        yield Path(folder) / name
        elif path.name.upper() == "DICOMDIR":
            yield from _dicomdir_files(path)
        else:
            yield path


def _dicomdir_files(path: Path) -> Iterator[Path]:
    from pydicom import dcmread

    for record in dcmread(path).DirectoryRecordSequence:
        file_id = record.get("ReferencedFileID")
        if file_id:
            parts = [file_id] if isinstance(file_id, str) else list(file_id)
            yield path.parent.joinpath(*parts)


def import_file(archive: Archive, path: Path) -> str:
    """Store one Part 10 file; returns 'stored', 'duplicate' or 'replaced'. Raises on rejection."""
    raw = path.read_bytes()
    meta, offset = header.read_file_meta(raw)
    syntax = meta.get(_TRANSFER_SYNTAX)
    if not offset or not syntax:
        raise ValueError("not a DICOM Part 10 file (no File Meta Information)")
    if meta.get(_MEDIA_STORAGE_SOP_CLASS, b"").rstrip(b"\x00 ") == _MEDIA_DIRECTORY:
        raise ValueError("a DICOMDIR: import it by name to load the files it lists")
    transfer_syntax = syntax.rstrip(b"\x00 ").decode("ascii")
    return archive.store.store(memoryview(raw)[offset:], transfer_syntax).result


def run_import(
    archive: Archive, paths: Iterable[Path], jobs: int, progress: Callable[[ImportSummary], None] | None = None
) -> ImportSummary:
    summary = ImportSummary()

    def one(path: Path) -> tuple[Path, str, str | None]:
        try:
            return path, import_file(archive, path), None
        except (PacsError, ValueError, OSError) as exc:
            return path, "rejected", str(exc)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        # map() keeps a bounded window of work in flight in file order.
        for path, result, reason in pool.map(one, dicom_files(paths)):
            summary.counts["duplicate" if result == DUPLICATE else result] += 1
            if reason is not None:
                summary.rejected.append((str(path), reason))
            if progress is not None:
                progress(summary)
    return summary
