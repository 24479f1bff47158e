"""Verification (C-ECHO) and association acceptance with DCMTK's echoscu (and movescu)."""
import pytest

from tests.integration.helpers import run
from tests.peers import dcmtk

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def node(module_node_factory):
    return module_node_factory()


def test_echoscu_succeeds(node):
    proc = run([dcmtk("echoscu"), "-v", "-aec", node.ae_title, "127.0.0.1", str(node.port)])
    assert proc.returncode == 0, proc.stdout
    assert "Received Echo Response (Success)" in proc.stdout


@pytest.mark.parametrize(
    "program,calling,args",
    [
        ("echoscu", "ECHOPEER", []),
        # A retrieve association: the node answers it on another code path than verification.
        ("movescu", "MOVEPEER", ["-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID=1.2.3"]),
    ],
)
def test_wrong_called_ae_title_is_rejected_and_logged(node, program, calling, args):
    proc = run([dcmtk(program), "-aet", calling, "-aec", "WRONG", *args, "127.0.0.1", str(node.port)])
    assert proc.returncode != 0
    assert "Called AE Title Not Recognized" in proc.stdout, proc.stdout
    line = node.wait_log("rejected", calling)
    # When the log names the title called, it is the peer's, not ours.
    assert f"to {node.ae_title}" not in line, line
    # The node still answers its own title afterwards.
    assert run([dcmtk("echoscu"), "-aec", node.ae_title, "127.0.0.1", str(node.port)]).returncode == 0
