"""Where a dataset lies inside a Part 10 file on disk (after its file meta): read in pieces
by those that never need it whole (retrieval of a large instance, its content digest)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pacsnode._native import header

# Enough for any file meta this node writes or accepts.
_META_READ = 64 * 1024


@dataclass(frozen=True)
class FileDataset:
    """An encoded dataset in a file: ``length`` bytes from ``offset`` (after its file meta)."""

    path: Path
    offset: int
    length: int

    def __len__(self) -> int:
        return self.length


def file_dataset(path: Path) -> FileDataset:
    """The dataset of the Part 10 file at ``path`` (its file meta read, nothing else)."""
    with open(path, "rb") as fh:
        _, offset = header.read_file_meta(fh.read(_META_READ))
    return FileDataset(path, offset, path.stat().st_size - offset)
