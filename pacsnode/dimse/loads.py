"""Associations open in each worker, in memory the workers share.

All workers accept on one listening socket, and whichever wakes first takes the connection:
four associations arriving together can land three on one worker and one on the other. A
worker that holds more associations than another lets the less busy one accept first.
"""
from __future__ import annotations

import multiprocessing


class WorkerLoads:
    def __init__(self, workers: int) -> None:
        # Each worker writes only its own slot, so no lock is needed; created before the fork.
        self._counts = multiprocessing.RawArray("i", max(workers, 1))
        self.slot = 0

    def for_worker(self, slot: int) -> "WorkerLoads":
        """This table as seen by worker ``slot`` (a restarted worker starts from zero)."""
        view = object.__new__(WorkerLoads)
        view._counts = self._counts
        view.slot = slot
        self._counts[slot] = 0
        return view

    def opened(self) -> None:
        self._counts[self.slot] += 1

    def closed(self) -> None:
        self._counts[self.slot] -= 1

    def busier_than_another(self) -> bool:
        mine = self._counts[self.slot]
        return any(count < mine for slot, count in enumerate(self._counts) if slot != self.slot)
