"""Blobs small enough to live in the index: their ids, and what the blob store reads them through.

A small instance's bytes are written by the index in the same transaction that indexes the
instance: one durable commit instead of a segment flush and then a commit, which is most of
the cost of storing a small instance. The index keeps them under an ``inline:`` id; the blob
store reads and deletes such ids through it.
"""
from __future__ import annotations

import uuid
from typing import Protocol

INLINE_PREFIX = "inline:"
# Part 10 sizes up to this are kept in the index (while it has room: see LmdbIndex.keeps_inline).
INLINE_LIMIT = 64 * 1024


def new_inline_id() -> str:
    return f"{INLINE_PREFIX}{uuid.uuid4().hex}"


def is_inline(blob_id: str) -> bool:
    return blob_id.startswith(INLINE_PREFIX)


class InlineBlobs(Protocol):
    def read_blob(self, blob_id: str) -> bytes: ...

    def delete_blob(self, blob_id: str) -> None: ...
