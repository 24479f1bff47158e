"""The LMDB environment and typed transactions over its named databases.

Every commit is durable (sync=True): an ACK is sent only after the commit returns.
Writes happen in one thread only (store.writer.Writer); reads in any thread.
"""
from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Iterator

import lmdb
import msgpack

from risnode.errors import ConfigError

DATABASES = (
    "patients",  # patient id -> Patient
    "aliases",  # merged-away patient id -> surviving id
    "orders",  # accession -> Order
    "order_keys",  # "placer/<app>/<number>", "sps/<id>", "patient/<id>/<acc>" -> accession
    "slots",  # "<modality>/<iso start>/<accession>" -> ""
    "counters",  # name -> int
    "messages",  # "<sending app>|<facility>|<control id>" -> inbound message with its ACK
    "rejects",  # "<iso time>/<n>" -> a message refused before its control ID could be read
    "outbound",  # "<id:016d>" -> OutboundMessage
    "outbound_pending",  # "<role>/<id:016d>" -> "" (sending order per role)
    "mpps",  # SOP Instance UID -> {"state", "dataset" (DICOM JSON)}
    "ian",  # SOP Instance UID -> an Instance Availability Notification from the PACS
)


def _pack(value) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def _unpack(data) -> object:
    return msgpack.unpackb(data, raw=False)


class Tx:
    """One LMDB transaction with str keys and msgpack values."""

    def __init__(self, txn: lmdb.Transaction, dbs: dict, env: lmdb.Environment) -> None:
        self._txn = txn
        self._dbs = dbs
        self._env = env
        self.after_commit: list = []

    def get(self, db: str, key: str):
        data = self._txn.get(key.encode(), db=self._dbs[db])
        return None if data is None else _unpack(data)

    def put(self, db: str, key: str, value) -> None:
        self._txn.put(key.encode(), _pack(value), db=self._dbs[db])

    def delete(self, db: str, key: str) -> None:
        self._txn.delete(key.encode(), db=self._dbs[db])

    def items(self, db: str, prefix: str = "") -> Iterator[tuple[str, object]]:
        """(key, value) pairs whose key starts with ``prefix``, in key order."""
        start = prefix.encode()
        with self._txn.cursor(db=self._dbs[db]) as cursor:
            if not cursor.set_range(start):
                return
            for key, value in cursor:
                if not key.startswith(start):
                    return
                yield key.decode(), _unpack(value)

    def next_counter(self, name: str, start: int = 1) -> int:
        value = (self.get("counters", name) or start - 1) + 1
        self.put("counters", name, value)
        return value

    @contextlib.contextmanager
    def savepoint(self) -> Iterator["Tx"]:
        """A nested transaction: its writes vanish if the block raises."""
        child = self._env.begin(write=True, parent=self._txn)
        nested = Tx(child, self._dbs, self._env)
        try:
            yield nested
        except BaseException:
            child.abort()
            raise
        child.commit()
        # What the nested writes want done after commit happens after the outer commit.
        self.after_commit.extend(nested.after_commit)


class Store:
    def __init__(self, path: Path, map_size: int = 4 * 1024**3, readonly: bool = False) -> None:
        path = Path(path)
        if readonly and not (path / "data.mdb").exists():
            raise ConfigError(f"no RIS data in {path}: start `risnode serve --data {path}` first or fix --data")
        if not readonly:
            path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.env = lmdb.open(
            str(path), map_size=map_size, max_dbs=len(DATABASES), sync=True, metasync=True,
            readonly=readonly, lock=True, subdir=True,
        )
        # Handles opened by env.open_db itself stay valid for every later transaction.
        self._dbs = {}
        for name in DATABASES:
            try:
                self._dbs[name] = self.env.open_db(name.encode(), create=not readonly)
            except lmdb.NotFoundError:  # read-only, on a folder written before this table existed
                pass
        self.writer_thread: int | None = None

    @contextlib.contextmanager
    def read(self) -> Iterator[Tx]:
        with self.env.begin(buffers=False) as txn:
            yield Tx(txn, self._dbs, self.env)

    @contextlib.contextmanager
    def write(self) -> Iterator[Tx]:
        if self.writer_thread is not None and threading.get_ident() != self.writer_thread:
            raise RuntimeError("LMDB writes go through risnode.store.Writer (one writer thread)")
        txn = self.env.begin(write=True)
        tx = Tx(txn, self._dbs, self.env)
        try:
            yield tx
        except BaseException:
            txn.abort()
            raise
        try:
            txn.commit()
        except lmdb.MapFullError as exc:
            raise ConfigError(f"LMDB map full in {self.path}: raise map_size") from exc

    def close(self) -> None:
        self.env.close()
