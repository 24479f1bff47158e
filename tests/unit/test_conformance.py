"""docs/conformance.md must be exactly what the code's own lists generate."""
from pathlib import Path

from pacsnode.conformance import render
from pacsnode.dicom.uids import STORAGE_SOP_CLASSES, STORAGE_TRANSFER_SYNTAXES

DOC = Path(__file__).resolve().parents[2] / "docs" / "conformance.md"


def test_statement_is_generated_from_code():
    assert DOC.read_text() == render(), "regenerate: pacsnode conformance > docs/conformance.md"


def test_statement_lists_every_storage_class_and_syntax():
    text = DOC.read_text()
    for uid in list(STORAGE_SOP_CLASSES.values()) + list(STORAGE_TRANSFER_SYNTAXES):
        assert f"| {uid} |" in text
