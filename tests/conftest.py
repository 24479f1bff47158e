import functools
import time
from pathlib import Path

import pytest
from pynetdicom.association import Association

from tests.peers import Node, StoreSCP, started


def _park_reactor(assoc: Association) -> None:
    """Work around a race in pynetdicom 3.0.4's requestor, seen here about once per few
    thousand operations against a fast peer: each send_*() pauses the association's reactor
    thread by clearing a checkpoint and waiting for ``_is_paused``, which can still be True
    from the reactor's previous stop while it is in fact running on; it then takes the
    response off the queue as an "unexpected service message", and the request times out.
    Parked here until the reactor is really waiting at its checkpoint, it cannot."""
    assoc._reactor_checkpoint.clear()
    while not (assoc._is_paused and assoc._reactor_checkpoint._cond._waiters):
        if not assoc.is_alive():
            return
        time.sleep(0.0001)


def _parked(method):
    @functools.wraps(method)
    def send(self, *args, **kwargs):
        _park_reactor(self)
        try:
            return method(self, *args, **kwargs)
        except BaseException:
            self._reactor_checkpoint.set()
            raise

    return send


for _name in ("send_c_echo", "send_c_store", "send_c_find", "send_c_get", "send_c_move", "send_n_action",
              "send_n_create", "send_n_set", "send_n_event_report", "send_n_get"):
    setattr(Association, _name, _parked(getattr(Association, _name)))


def _nodes(folder: Path):
    """A factory of started nodes under ``folder``; every node still running is stopped after."""
    return started(lambda n, **kwargs: Node(folder / f"node{n}", **kwargs))


@pytest.fixture
def node_factory(tmp_path):
    with _nodes(tmp_path) as make:
        yield make


@pytest.fixture(scope="module")
def module_node_factory(tmp_path_factory):
    """Like node_factory, for nodes a whole test module shares (loaded once)."""
    with _nodes(tmp_path_factory.mktemp("nodes")) as make:
        yield make


@pytest.fixture
def storescp_factory(tmp_path):
    """Start DCMTK storescp processes: ``make(options, ae_title=..., port=...)``."""
    scps: list[StoreSCP] = []

    def make(options=(), **kwargs) -> StoreSCP:
        scp = StoreSCP(tmp_path / f"scp{len(scps)}", options, **kwargs)
        scps.append(scp)
        return scp.start()

    yield make
    for scp in scps:
        scp.stop()
