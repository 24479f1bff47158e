"""Worker loads: a worker holding more associations than another lets it accept first."""
from __future__ import annotations

import multiprocessing

from pacsnode.dimse.loads import WorkerLoads


def test_busier_worker_defers_to_the_other():
    loads = WorkerLoads(2)
    first, second = loads.for_worker(0), loads.for_worker(1)
    assert not first.busier_than_another() and not second.busier_than_another()
    first.opened()
    assert first.busier_than_another() and not second.busier_than_another()
    second.opened()
    assert not first.busier_than_another()
    first.closed()
    assert second.busier_than_another()


def _open_twice(loads: WorkerLoads) -> None:
    loads.opened()
    loads.opened()


def test_counts_are_shared_with_forked_workers():
    loads = WorkerLoads(2)
    child = multiprocessing.get_context("fork").Process(target=_open_twice, args=(loads.for_worker(1),))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert loads.for_worker(0).busier_than_another() is False
    assert loads._counts[1] == 2
    # A restarted worker starts from zero.
    assert loads.for_worker(1)._counts[1] == 0
