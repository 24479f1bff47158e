from pathlib import Path

import pytest

from tests.peers import started
from tests.ris.peers import Hl7Listener, RisNode


def _nodes(folder: Path):
    return started(lambda n, **kwargs: RisNode(folder / f"ris{n}", **kwargs))


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
