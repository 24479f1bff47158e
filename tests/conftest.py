from pathlib import Path

import pytest

from tests.peers import Node, StoreSCP, started


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
