"""The one writer: every mutation runs in this thread, inside one durable write transaction.

The asyncio loop (MLLP, HTTP, outbound queue) awaits it; pynetdicom's threads (MPPS) block
on it. LMDB would serialize writers anyway; one thread makes the order of changes plain and
keeps fsync off the event loop.
"""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, TypeVar

from risnode.store.db import Store, Tx

T = TypeVar("T")


class Writer:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="risnode-writer")
        self._pool.submit(self._claim).result()

    def _claim(self) -> None:
        self.store.writer_thread = threading.get_ident()

    def _apply(self, fn: Callable[..., T], args: tuple) -> T:
        with self.store.write() as tx:
            result = fn(tx, *args)
        for callback in tx.after_commit:
            callback()
        return result

    def submit(self, fn: Callable[..., T], *args) -> "Future[T]":
        """Run ``fn(tx, *args)`` in the writer thread; its writes commit together."""
        return self._pool.submit(self._apply, fn, args)

    def run(self, fn: Callable[..., T], *args) -> T:
        """Blocking form, for threads that are not the event loop."""
        return self.submit(fn, *args).result()

    async def __call__(self, fn: Callable[[Tx], T], *args) -> T:
        return await asyncio.wrap_future(self.submit(fn, *args))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
