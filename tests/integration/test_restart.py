"""What the node stored survives a restart: C-FIND and C-MOVE still return everything."""
import pytest

from tests.data_gen import STUDIES
from tests.integration.helpers import describe, findscu, movescu, received_by_uid, split_part10, storescu

pytestmark = pytest.mark.integration


def test_find_and_move_after_restart(node_factory, storescp_factory, generated, tmp_path):
    scp = storescp_factory(["+xa", "+B"], ae_title="DEST")
    node = node_factory(remotes={"DEST": scp.port})
    files = [describe(p) for p in generated.paths]
    assert storescu(node.port, files, tmp_path / "store").succeeded() == generated.paths

    node.restart()

    images = findscu(node, "IMAGE", {"SOPInstanceUID": None}, tmp_path)
    assert sorted(str(r.SOPInstanceUID) for r in images) == sorted(f.sop_instance_uid for f in files)
    studies = findscu(node, "STUDY", {"StudyInstanceUID": None, "NumberOfStudyRelatedInstances": None}, tmp_path)
    assert {str(r.StudyInstanceUID): int(r.NumberOfStudyRelatedInstances) for r in studies} == {
        s.uid: len(generated.of_study(s.key)) for s in STUDIES
    }

    for study in STUDIES:
        result = movescu(node, "DEST", {"StudyInstanceUID": study.uid})
        assert result.final.get("status") == 0 and result.final.get("completed") == len(generated.of_study(study.key)), result.output
    received = received_by_uid(scp.folder)
    assert sorted(received) == sorted(f.sop_instance_uid for f in files)
    for f in files:
        assert split_part10(received[f.sop_instance_uid])[1] == split_part10(f.path)[1], f.name
