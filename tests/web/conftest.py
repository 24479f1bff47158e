"""A node with DICOMweb, loaded by C-STORE with the generated set and corpus files in many
transfer syntaxes; dicomweb-client against it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from tests.integration.conftest import corpus, dcmtk_encoded, generated  # noqa: F401  (shared fixtures)
from tests.integration.helpers import DicomFile, describe, pynetdicom_store, storescu
from tests.peers import Node, free_port, require

# Corpus files in the syntaxes the node must serve: native (LE, BE, deflated), JPEG baseline
# (YBR, multi-frame), JPEG lossless, JPEG 2000, RLE (multi-frame, RGB), and one without pixels.
CORPUS_PICKS = [
    "CT_small.dcm", "JPEG2000.dcm", "SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_rle_2frame.dcm", "emri_small_RLE.dcm",
    "waveform_ecg.dcm", "image_dfl.dcm", "JPGLosslessP14SV1_1s_1f_8b.dcm", "examples_ybr_color.dcm",
    "MR_small_bigendian.dcm", "US1_J2KR.dcm",
]  # fmt: skip


@dataclass
class WebNode:
    node: Node
    http_port: int
    files: list[DicomFile]  # everything the node stored by C-STORE

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/dicom-web"

    def client(self):
        return _require_client().DICOMwebClient(self.url)

    def file(self, name: str) -> DicomFile:
        return next(f for f in self.files if f.path.name == name)


def _require_client():
    try:
        import dicomweb_client
    except ImportError:
        require(False, "dicomweb-client not installed (pip install '.[test]')")
        raise
    return dicomweb_client


def picks() -> list[DicomFile]:
    out, seen = [], set()
    for name in CORPUS_PICKS:
        d = describe(get_testdata_file(name))
        if d is not None and d.sop_instance_uid not in seen:
            seen.add(d.sop_instance_uid)
            out.append(d)
    return out


def start_web_node(folder: Path, extra: list[str] | None = None) -> tuple[Node, int]:
    http_port = free_port()
    node = Node(folder, extra=["--http-port", str(http_port), "--workers", "2", *(extra or [])])
    return node.start(), http_port


@pytest.fixture(scope="module")
def web_node(tmp_path_factory, generated, dcmtk_encoded) -> WebNode:  # noqa: F811
    folder = tmp_path_factory.mktemp("web")
    node, http_port = start_web_node(folder / "node")
    # DCMTK's storescu sends the generated set; pynetdicom sends the corpus files verbatim
    # (storescu would drop trailing padding), so the node holds each file's exact dataset bytes.
    report = storescu(node.port, [describe(p) for p in generated.paths], folder / "load")
    assert report.succeeded() == generated.paths, report.output[-3000:]
    others = dcmtk_encoded + picks()
    outcome = pynetdicom_store(node, others)
    assert all(v == "Success" for v in outcome.values()), {p.name: v for p, v in outcome.items() if v != "Success"}
    files = [describe(p) for p in generated.paths] + others
    stored = {f.path for f in files}
    try:
        yield WebNode(node, http_port, [f for f in files if f.path in stored])
    finally:
        if node.proc is not None:
            node.stop()
