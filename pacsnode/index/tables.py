"""The workflow tables, in the index's LMDB environment (so their writes can share its
transactions): what the RIS told us, reconciliation, audit, MPPS and outgoing messages.

  ris_patients   Patient ID -> identity as the RIS knows it (and ``merged_into``)
  orders         Accession Number -> order (patient, Study Instance UID, status ...)
  order_study    Study Instance UID -> Accession Number
  recon          item id -> reconciliation item
  recon_study    Study Instance UID -> the study's current item id
  audit          entry id -> an identity change with its old and new values
  counters       name -> int
  mpps           SOP Instance UID -> performed procedure step
  mpps_open      SOP Instance UID -> its studies, until the step's study is announced
  outbox         "<destination>/<id>" -> a DICOM message to send (MPPS forward, IAN)
  recent         Study Instance UID -> when its last instance was stored (stability rule)
  notified       Study Instance UID -> what was last announced (IAN)

Values are msgpack maps; keys are UTF-8 strings. Nothing here knows HL7 or DICOM.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import lmdb
import msgpack

from pacsnode.index.lmdb_index import LmdbIndex

TABLES = (
    "ris_patients", "orders", "order_study", "recon", "recon_study", "audit", "counters",
    "mpps", "mpps_open", "outbox", "recent", "notified",
)  # fmt: skip


def _key(text: str) -> bytes:
    return (text or "\x00").encode("utf-8")[:480]


class Tx:
    """One transaction over the workflow tables (str keys, msgpack values)."""

    def __init__(self, txn: lmdb.Transaction, dbs: dict) -> None:
        self.txn = txn
        self._dbs = dbs

    def get(self, table: str, key: str):
        raw = self.txn.get(_key(key), db=self._dbs[table])
        return None if raw is None else msgpack.unpackb(raw, raw=False)

    def put(self, table: str, key: str, value) -> None:
        self.txn.put(_key(key), msgpack.packb(value, use_bin_type=True), db=self._dbs[table])

    def delete(self, table: str, key: str) -> None:
        self.txn.delete(_key(key), db=self._dbs[table])

    def items(self, table: str, prefix: str = "") -> Iterator[tuple[str, object]]:
        """(key, value) pairs whose key starts with ``prefix``, in key order."""
        start = prefix.encode("utf-8")
        with self.txn.cursor(db=self._dbs[table]) as cursor:
            if not cursor.set_range(start):
                return
            for key, value in cursor:
                if not key.startswith(start):
                    return
                yield key.decode("utf-8"), msgpack.unpackb(value, raw=False)

    def count(self, table: str) -> int:
        return self.txn.stat(self._dbs[table])["entries"]

    def next_id(self, name: str) -> int:
        value = (self.get("counters", name) or 0) + 1
        self.put("counters", name, value)
        return value


class WorkflowTables:
    def __init__(self, index: LmdbIndex) -> None:
        self.index = index
        self.env = index.env
        self.dbs = {name: index.open_table(name) for name in TABLES}

    def bind(self, txn: lmdb.Transaction) -> Tx:
        """The workflow tables inside a transaction the index opened (``after_add``, ``rewrite``)."""
        return Tx(txn, self.dbs)

    @contextlib.contextmanager
    def read(self) -> Iterator[Tx]:
        with self.env.begin() as txn:
            yield Tx(txn, self.dbs)

    @contextlib.contextmanager
    def write(self) -> Iterator[Tx]:
        """Durable once the block has exited (LmdbIndex.write)."""
        with self.index.write() as txn:
            yield Tx(txn, self.dbs)


def item_key(n: int) -> str:
    return f"{n:012d}"
