import contextlib
from pathlib import Path

import pytest

from tests.ris.peers import Hl7Listener, RisNode


@contextlib.contextmanager
def _nodes(folder: Path):
    nodes: list[RisNode] = []

    def make(**kwargs) -> RisNode:
        node = RisNode(folder / f"ris{len(nodes)}", **kwargs)
        nodes.append(node)
        return node.start()

    try:
        yield make
    finally:
        for node in nodes:
            if node.proc is not None:
                node.stop()


@pytest.fixture
def ris_factory(tmp_path):
    with _nodes(tmp_path) as make:
        yield make


@pytest.fixture(scope="module")
def module_ris_factory(tmp_path_factory):
    with _nodes(tmp_path_factory.mktemp("ris")) as make:
        yield make


@pytest.fixture
def listener_factory():
    listeners: list[Hl7Listener] = []

    def make(port: int | None = None) -> Hl7Listener:
        listener = Hl7Listener(port)
        listeners.append(listener)
        return listener.start()

    yield make
    for listener in listeners:
        listener.stop()
