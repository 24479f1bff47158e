"""Shared data for the integration tests: the corpus, the generated set, DCMTK-encoded files."""
from __future__ import annotations

import pytest
from pydicom.data import get_testdata_file

from tests.corpus import corpus_files
from tests.data_gen import GeneratedSet, generate
from tests.integration.helpers import DicomFile, StoreReport, describe, run, storescu
from tests.peers import Node, dcmtk


@pytest.fixture(scope="session")
def corpus() -> list[DicomFile]:
    """Every corpus file pydicom reads as DICOM with File Meta and the UIDs a store needs."""
    files = [d for d in map(describe, corpus_files()) if d is not None]
    assert len(files) > 100, "the corpus is incomplete: is pydicom-data installed?"
    return files


@pytest.fixture(scope="session")
def generated(tmp_path_factory) -> GeneratedSet:
    return generate(tmp_path_factory.mktemp("generated"))


# (program and options, source, expected transfer syntax): syntaxes the corpus lacks or
# has only from other encoders. '+ua' gives each output a new SOP Instance UID.
ENCODINGS = [
    (["dcmcjpeg", "+el", "+ua"], "CT_small.dcm", "1.2.840.10008.1.2.4.57"),  # JPEG Lossless P14
    (["dcmcjpeg", "+e1", "+ua"], "CT_small.dcm", "1.2.840.10008.1.2.4.70"),  # JPEG Lossless SV1
    (["dcmcjpeg", "+ee", "+ua"], "generated", "1.2.840.10008.1.2.4.51"),  # JPEG Extended 12 bit
    (["dcmcrle", "+ua"], "CT_small.dcm", "1.2.840.10008.1.2.5"),  # RLE Lossless
    (["dcmcjpls", "+el", "+ua"], "CT_small.dcm", "1.2.840.10008.1.2.4.80"),  # JPEG-LS Lossless
    # Near-lossless JPEG-LS needs unsigned pixels (CT_small's are signed).
    (["dcmcjpls", "+en", "+ua"], "generated", "1.2.840.10008.1.2.4.81"),
]


@pytest.fixture(scope="session")
def dcmtk_encoded(tmp_path_factory, generated) -> list[DicomFile]:
    """Files encoded at test time by DCMTK's encoders, each checked to be in its syntax."""
    folder = tmp_path_factory.mktemp("encoded")
    out = []
    for (program, *options), source, syntax in ENCODINGS:
        src = str(generated.paths[0]) if source == "generated" else get_testdata_file(source)
        dst = folder / f"{program}{''.join(options)}.dcm"
        proc = run([dcmtk(program), *options, src, str(dst)])
        assert proc.returncode == 0, proc.stdout
        d = describe(dst)
        assert d is not None and d.transfer_syntax == syntax, (program, options, d)
        out.append(d)
    return out


@pytest.fixture(scope="module")
def load_node(module_node_factory, tmp_path_factory):
    """``load(files, **node_options)``: a node of this module, loaded with DCMTK storescu
    (each file in its own syntax); returns the node and storescu's per-file report."""

    def load(files: list[DicomFile], **node_options) -> tuple[Node, StoreReport]:
        node = module_node_factory(**node_options)
        report = storescu(node.port, files, tmp_path_factory.mktemp("load"))
        return node, report

    return load


@pytest.fixture(scope="module")
def generated_node(load_node, generated) -> Node:
    """A node holding exactly the generated set."""
    node, report = load_node([describe(p) for p in generated.paths])
    assert report.succeeded() == generated.paths, report.output
    return node
