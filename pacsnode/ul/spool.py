"""One incoming dataset: its fragments in memory, or spooled to disk behind its file meta."""
from __future__ import annotations

import os
from pathlib import Path

from pacsnode.dicom.meta import build_file_meta
from pacsnode.services.archive import Archive
from pacsnode.services.digest import ContentDigest
from pacsnode.ul import commands

# Datasets above this size go to a spool file as they arrive instead of staying in memory.
SPOOL_THRESHOLD = 32 * 1024 * 1024


class IncomingDataset:
    """Fragments of one dataset, in memory or spooled behind its file meta; a C-STORE's with
    its content digest (a query's or retrieve's identifier needs none)."""

    def __init__(self, archive: Archive, command: commands.Command, transfer_syntax: str, calling_aet: str) -> None:
        self.archive = archive
        self.command = command
        self.transfer_syntax = transfer_syntax
        self.calling_aet = calling_aet
        self.digest = ContentDigest(transfer_syntax) if command.field == commands.C_STORE_RQ else None
        self.fragments: list[memoryview] = []
        self.size = 0
        self.spool: Path | None = None
        self._fd: int | None = None
        self.meta_length = 0

    def add(self, fragment: memoryview) -> None:
        if self.digest is not None:
            self.digest.update(fragment)
        self.size += len(fragment)
        if self._fd is None:
            self.fragments.append(fragment)
            if self.size > SPOOL_THRESHOLD:
                self._start_spool()
        else:
            os.write(self._fd, fragment)

    def _start_spool(self) -> None:
        cmd = self.command
        meta = build_file_meta(cmd.sop_class_uid, cmd.sop_instance_uid, self.transfer_syntax, self.calling_aet)
        self.spool = self.archive.blobs.spool_path()
        self._fd = os.open(self.spool, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self.meta_length = len(meta)
        os.writev(self._fd, [meta, *self.fragments])
        self.fragments = []

    def take(self) -> bytes:
        """The whole in-memory dataset as one buffer (its fragments are released)."""
        data = b"".join(self.fragments)
        self.fragments = []
        return data

    def finish_spool(self) -> None:
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None

    def discard(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.spool is not None:
            self.spool.unlink(missing_ok=True)
