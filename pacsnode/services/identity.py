"""Identity reconciliation on store: does an instance carry the identity of its order?

The orders come from the RIS over HL7 (``services.hl7feed`` keeps them in the ``orders`` and
``ris_patients`` tables). An instance whose Accession Number (or else Study Instance UID)
names an order is compared with it: Patient ID, name, birth date, sex, Study Instance UID
(and Accession Number when matched by study). The policy decides what a difference does:

* ``coerce``: the header is rewritten with the order's values, as the worklist would have
  given them (pydicom; the exception path), with the old values kept in Original Attributes
  Sequence (0400,0561), and the change is listed (resolved) and written to the audit log.
* ``quarantine``: the instance is stored as received but kept out of the hierarchy (C-FIND,
  C-MOVE, C-GET) and listed until someone resolves it.
* ``off``: no check.

An instance matching no order is stored and listed as unmatched (when an order feed is
configured). Nothing is filed silently under another patient. The check is one read
transaction per instance on the local tables; the RIS is never asked on this path.
"""
from __future__ import annotations

import copy
import io
import logging
import zlib
from dataclasses import dataclass, field
from datetime import datetime

from pydicom import Dataset
from pydicom.charset import convert_encodings
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence

from pacsnode.dicom.syntax import encoding_of, inflated
from pacsnode.dicom.uids import DEFLATED_EXPLICIT_VR_LE
from pacsnode.index.tables import Tx, WorkflowTables, item_key

LOGGER = logging.getLogger(__name__)

POLICIES = ("quarantine", "coerce", "off")
PATIENT_KEYS = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex")
CHECKED = PATIENT_KEYS + ("StudyInstanceUID", "AccessionNumber")
# A header without these is wrong, not merely incomplete.
_STRICT = ("PatientID", "StudyInstanceUID")
UNMATCHED, COERCED, QUARANTINED = "unmatched", "coerced", "quarantined"
# Reconciliation item kinds: what the view lists.
KIND = {UNMATCHED: "unmatched", COERCED: "coerced", QUARANTINED: "mismatch"}
_MAX_MERGE_HOPS = 16


@dataclass(frozen=True)
class Expected:
    """What an order says an instance's identity is."""

    accession: str
    study_uid: str
    patient: dict
    matched_by: str  # "AccessionNumber" or "StudyInstanceUID"

    def values(self) -> dict:
        return {**self.patient, "StudyInstanceUID": self.study_uid, "AccessionNumber": self.accession}


def resolve_patient(tx: Tx, patient_id: str) -> dict:
    """The RIS's identity for this Patient ID, following merges to the surviving patient."""
    current = patient_id
    for _ in range(_MAX_MERGE_HOPS):
        known = tx.get("ris_patients", current)
        if known is None:
            return {"PatientID": current}
        if not known.get("merged_into"):
            return {k: known.get(k, "") for k in PATIENT_KEYS} | {"PatientID": current}
        current = known["merged_into"]
    return {"PatientID": current}


def lookup(tx: Tx, accession: str | None, study_uid: str | None) -> Expected | None:
    order, matched_by = None, "AccessionNumber"
    if accession:
        order = tx.get("orders", accession)
    if order is None and study_uid:
        acc = tx.get("order_study", study_uid)
        order, matched_by = (tx.get("orders", acc) if acc else None), "StudyInstanceUID"
    if order is None:
        return None
    return Expected(order["accession"], order.get("study_uid", ""), resolve_patient(tx, order["patient_id"]), matched_by)


def _person_name(value: str) -> str:
    alphabetic = str(value).split("=")[0]
    return " ".join(alphabetic.upper().rstrip("^ ").split())


def same(keyword: str, got, want) -> bool:
    got, want = str(got or "").strip(), str(want or "").strip()
    if keyword == "PatientName":
        return _person_name(got) == _person_name(want)
    if keyword == "PatientSex":
        return got.upper() == want.upper()
    return got == want


def compare(attrs: dict, expected: Expected) -> tuple[dict, dict]:
    """(conflicts {kw: (received, expected)}, fills {kw: expected}): a value the header has
    and the order contradicts is a conflict; one the header lacks is only a fill."""
    conflicts, fills = {}, {}
    for keyword, want in expected.values().items():
        if not want:
            continue
        got = attrs.get(keyword) or ""
        if same(keyword, got, want):
            continue
        if got or keyword in _STRICT:
            conflicts[keyword] = (str(got), want)
        else:
            fills[keyword] = want
    return conflicts, fills


@dataclass
class Decision:
    outcome: str  # UNMATCHED, COERCED or QUARANTINED
    note: dict
    changes: dict = field(default_factory=dict)  # keyword -> new value (COERCED)


def received_identity(attrs: dict) -> dict:
    return {k: str(attrs.get(k) or "") for k in CHECKED}


class IdentityChecker:
    """The per-instance check, called by ``StoreService.prepare`` in the receiving thread."""

    def __init__(self, tables: WorkflowTables, policy: str, list_unmatched: bool) -> None:
        self.tables = tables
        self.policy = policy
        self.list_unmatched = list_unmatched

    def check(self, attrs: dict, source_ae: str | None = None) -> Decision | None:
        if self.policy == "off":
            return None
        with self.tables.read() as tx:
            expected = lookup(tx, attrs.get("AccessionNumber"), attrs.get("StudyInstanceUID"))
        if expected is None:
            if not self.list_unmatched:
                return None
            return Decision(UNMATCHED, {"outcome": UNMATCHED, "received": received_identity(attrs), "source_ae": source_ae or ""})
        conflicts, fills = compare(attrs, expected)
        if not conflicts and (not fills or self.policy != "coerce"):
            return None
        note = {
            "outcome": COERCED if self.policy == "coerce" else QUARANTINED,
            "order": expected.accession,
            "matched_by": expected.matched_by,
            "received": received_identity(attrs),
            "expected": expected.values(),
            "differences": sorted(conflicts),
            "filled": sorted(fills),
            "source_ae": source_ae or "",
        }
        if self.policy == "coerce":
            changes = {kw: want for kw, (_, want) in conflicts.items()} | fills
            return Decision(COERCED, note, changes)
        return Decision(QUARANTINED, note)


# -- the reconciliation items, written in the transaction that indexes the instances -----------


def now_iso() -> str:
    return datetime.now().isoformat(timespec="seconds")


def audit(tx: Tx, action: str, study_uid: str, old: dict, new: dict, by: str, instances: int, item: str = "", reason: str = "") -> str:
    key = item_key(tx.next_id("audit"))
    tx.put("audit", key, {
        "id": key, "at": now_iso(), "action": action, "study_uid": study_uid, "item": item,
        "old": old, "new": new, "by": by, "instances": instances, "reason": reason,
    })
    return key


def record_outcomes(tx: Tx, records: list) -> None:
    """``after_add`` hook: one reconciliation item per study and outcome (coercions also go
    to the audit log with their old and new values)."""
    groups: dict[tuple[str, str], list] = {}
    for record in records:
        if record.identity:
            groups.setdefault((record.study_uid, record.identity["outcome"]), []).append(record)
    for (study_uid, outcome), group in groups.items():
        note = group[0].identity
        kind = KIND[outcome]
        current = tx.get("recon_study", study_uid)
        item = tx.get("recon", current) if current else None
        if item is None or item["kind"] != kind or (kind == "mismatch" and item["state"] != "open"):
            key = item_key(tx.next_id("recon"))
            item = {
                "id": key, "kind": kind, "state": "resolved" if outcome == COERCED else "open",
                "study_uid": study_uid, "accession": note["received"].get("AccessionNumber", ""),
                "order": note.get("order", ""), "matched_by": note.get("matched_by", ""),
                "received": note["received"], "expected": note.get("expected"),
                "differences": note.get("differences", []), "filled": note.get("filled", []),
                "source_ae": note.get("source_ae", ""), "instances": 0, "quarantined": 0,
                "created": now_iso(), "last_seen": "", "resolution": None, "history": [],
            }
            if outcome == COERCED:
                changed = note["differences"] + note["filled"]
                entry = audit(
                    tx, "coerced on store", study_uid, {k: note["received"].get(k, "") for k in changed},
                    {k: note["expected"][k] for k in changed}, f"store from {note.get('source_ae') or '?'}",
                    len(group), key, f"order {note['order']}",
                )
                item["resolution"] = {"action": "coerce", "by": "policy", "at": now_iso(), "audit": entry}
            tx.put("recon_study", study_uid, key)
        item["instances"] += len(group)
        if outcome == QUARANTINED:
            item["quarantined"] += len(group)
        item["last_seen"] = now_iso()
        tx.put("recon", item["id"], item)
        if outcome != UNMATCHED:
            LOGGER.warning("%d instance(s) of study %s %s (reconciliation item %s)", len(group), study_uid, outcome, item["id"])


# -- re-encoding a header (the exception path) ------------------------------------------------


def recode_dataset(dataset: bytes | memoryview, transfer_syntax: str, changes: dict, reason: str) -> bytes:
    """The encoded dataset with ``changes`` (keyword -> value) applied, in the same transfer
    syntax, the old values recorded in an Original Attributes Sequence item (PS3.3 C.12.1)."""
    implicit, little = encoding_of(transfer_syntax)
    ds = read_dataset(io.BytesIO(bytes(inflated(dataset, transfer_syntax))), implicit, little)
    _fit_charset(ds, changes)
    modified = Dataset()
    for keyword, value in changes.items():
        if keyword in ds:
            modified[keyword] = copy.deepcopy(ds[keyword])
        else:
            setattr(modified, keyword, "")
        setattr(ds, keyword, value)
    item = Dataset()
    item.ModifiedAttributesSequence = Sequence([modified])
    item.AttributeModificationDateTime = datetime.now().strftime("%Y%m%d%H%M%S")
    item.ModifyingSystem = "PACSNODE"
    item.ReasonForTheAttributeModification = reason
    item.SourceOfPreviousValues = ""
    history = list(ds.get("OriginalAttributesSequence", []) or [])
    ds.OriginalAttributesSequence = Sequence(history + [item])
    buf = DicomBytesIO()
    buf.is_implicit_VR, buf.is_little_endian = implicit, little
    write_dataset(buf, ds)
    out = buf.getvalue()
    if transfer_syntax == DEFLATED_EXPLICIT_VR_LE:
        packer = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        out = packer.compress(out) + packer.flush()
    return out


def _fit_charset(ds: Dataset, changes: dict) -> None:
    """New text that the dataset's character set cannot hold moves it to UTF-8 (every
    text value decoded first, so none is re-labelled without being re-encoded)."""
    terms = ds.get("SpecificCharacterSet") or "ISO_IR 6"
    terms = [terms] if isinstance(terms, str) else list(terms)
    try:
        encodings = convert_encodings(terms)
    except (LookupError, ValueError):
        encodings = []
    text = "".join(str(v) for v in changes.values())
    if text.isascii() or any(_encodes(text, e) for e in encodings):
        return
    ds.decode()
    ds.SpecificCharacterSet = "ISO_IR 192"


def _encodes(text: str, encoding: str) -> bool:
    try:
        text.encode(encoding)
    except (UnicodeError, LookupError):
        return False
    return True
