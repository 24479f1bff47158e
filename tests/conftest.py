import pytest

from tests.peers import Node


@pytest.fixture
def node_factory(tmp_path):
    nodes: list[Node] = []

    def make(**kwargs) -> Node:
        node = Node(tmp_path / f"node{len(nodes)}", **kwargs)
        nodes.append(node)
        return node.start()

    yield make
    for node in nodes:
        if node.proc is not None:
            node.stop()
