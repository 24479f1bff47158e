"""Generates docs/conformance.md from the node's own lists, so the statement cannot drift."""
from __future__ import annotations

from pacsnode.dicom.attributes import COMPUTED_KEYS, LEVEL_ATTRIBUTES, LEVELS
from pacsnode.dicom.uids import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    QR_MODELS,
    QUERY_TRANSFER_SYNTAXES,
    STORAGE_SOP_CLASSES,
    STORAGE_TRANSFER_SYNTAXES,
    VERIFICATION,
    uid_name,
)

# The workflow services (docs/platform.md): SOP class and our role.
WORKFLOW_SOP_CLASSES = (
    ("1.2.840.10008.1.20.1", "SCP"),  # Storage Commitment Push Model
    ("1.2.840.10008.3.1.2.3.3", "SCP, and SCU for forwarding"),  # Modality Performed Procedure Step
    ("1.2.840.10008.5.1.4.33", "SCU"),  # Instance Availability Notification
    ("1.2.840.10008.5.1.4.31", "SCU"),  # Modality Worklist Information Model - FIND
)

_BEHAVIOUR = """\
## Behaviour

### Association acceptance
- The node accepts associations whose Called AE Title equals its own AE title
  (`--ae-title`, default `PACSNODE`); any other is rejected (A-ASSOCIATE-RJ, permanent,
  reason 7 "called AE title not recognized"). Any Calling AE Title may store, query and
  retrieve; C-MOVE destinations must be configured (`--remote AET=HOST:PORT`). One
  configured with `;associations=N` receives a C-MOVE over up to N associations at once,
  each sending the next instance when it is free (associations served by pynetdicom, such
  as those negotiating User Identity, send over one).
- Maximum PDU length received: 4 MiB. TCP_NODELAY is set on every connection.

### Storage SCP
- The dataset is kept byte for byte as received, in the transfer syntax it arrived in
  (no re-encoding), behind a File Meta Information group written by the node
  (Implementation Class UID `{impl_uid}`, Version Name `{impl_name}`, Source AE Title =
  the sender's Calling AE Title).
- Success (0000) is returned only once the file is fsync'd and the index transaction is
  committed to disk: an acknowledged instance survives a crash or power loss.
- Every element of the dataset is walked before acceptance; a truncated or structurally
  malformed dataset is refused with C000 (Cannot understand) and nothing is stored.
- SOP Instance UID, SOP Class UID, Study Instance UID and Series Instance UID are required
  (A900 otherwise); the dataset's SOP Class/Instance UIDs must equal the request's.
- Duplicate SOP Instance UID: identical content (same bytes, same transfer syntax) gives
  Success and changes nothing. Different content is refused with 0111 (Duplicate SOP
  instance) and the stored instance is kept (`duplicate_policy = "reject"`, the default);
  with `duplicate_policy = "replace"` the new content replaces the old if it stays in the
  same study and series (otherwise it is refused).
- Out of disk space or index space: A700 (Out of resources); nothing is half-stored.

### Query/Retrieve SCP
- C-FIND: Patient Root (PATIENT, STUDY, SERIES, IMAGE) and Study Root (STUDY, SERIES,
  IMAGE). Relational queries are accepted: a query need not carry the unique keys of the
  levels above its own. Matching: single value, universal, wildcard (`*`, `?`), UID list,
  value list (backslash-separated), date, time and datetime ranges. Person names match
  case-insensitively against the whole name and each component group (alphabetic,
  ideographic, phonetic); values are decoded in each instance's Specific Character Set.
- Matching is supported on the keys listed below; other keys are return keys only
  (universal matching) and are answered from the first stored instance of the entity.
- Responses carry exactly the requested keys, plus Query/Retrieve Level and, when any
  value is not ASCII, Specific Character Set (the requester's when every value fits in
  it, otherwise `ISO_IR 192`).
- C-CANCEL stops the response stream with FE00 (Cancel).
- C-MOVE and C-GET at every level of both models. Each instance goes out as stored when
  the peer accepted its transfer syntax; otherwise it is converted to Explicit (or Implicit)
  VR Little Endian: compressed pixel data is decoded (JPEG family, JPEG-LS, JPEG 2000, RLE),
  every other attribute is kept, and an instance that was lossy-compressed says so (Lossy
  Image Compression "01" and its method). C-MOVE proposes, per SOP class, each stored
  syntax alone and Explicit/Implicit VR Little Endian together. Final status: 0000, B000
  (some sub-operations failed, with the Failed SOP Instance UID List), A702 (all failed),
  A801 (unknown move destination), FE00 (cancelled, with the remaining instances listed).
"""


_WORKFLOW = """\
### Storage Commitment Push Model SCP
- N-ACTION (Action Type 1, Request Storage Commitment) on the well-known instance
  1.2.840.10008.1.20.1.1 is answered at once (0000; 0123 for another action type, 0114 without
  Transaction UID, 0115 with an empty Referenced SOP Sequence).
- Each referenced instance is read back from storage and its content digest (XXH3-128; SHA-256
  for records from before it) over transfer syntax and dataset bytes compared with the digest recorded when it was stored; only a match is
  committed. Failure Reasons: 0112 (not held), 0119 (another SOP class), 0110 (bytes differ or
  unreadable). A quarantined instance (identity under reconciliation) is held and committed.
- The N-EVENT-REPORT (Event Type ID 1: all committed, 2: some failed) is sent on the same
  association while the requester keeps it open; otherwise on a new association to the
  requester's AE title, which must be a configured remote (`--remote`), proposing the SCP role
  with SCP/SCU Role Selection Negotiation (three attempts).

### Modality Performed Procedure Step SCP, and SCU for forwarding
- N-CREATE must carry status IN PROGRESS (else 0106) and Scheduled Step Attributes Sequence
  (else 0120); a known SOP Instance UID gives 0111. N-SET on an unknown instance gives 0112, on
  a COMPLETED or DISCONTINUED one 0110 with Error ID A710; COMPLETED needs Performed Series
  Sequence (0120).
- Every accepted N-CREATE / N-SET is forwarded unchanged (same SOP Instance UID) to each
  `--mpps-forward` destination, in order, retried until answered (a durable queue).

### Instance Availability Notification SCU
- When a study is complete (its MPPS is COMPLETED and every instance it references is held
  and not quarantined; or, without MPPS, no instance has arrived for `--study-stable-seconds`)
  an N-CREATE (1.2.840.10008.5.1.4.33) goes to each `--ian` subscriber: Study Instance UID,
  Referenced Request Sequence (Accession Number, Requested Procedure ID), Referenced Performed
  Procedure Step Sequence, and every available instance (ONLINE, Retrieve AE Title = ours).

### Modality Worklist Information Model - FIND SCU
- With `--worklist`, the accession numbers of stored studies that match no known order are
  looked up (one C-FIND by Accession Number each, outside the storage path).

### Identity reconciliation
- With an order feed (`--hl7-port` or `--worklist`), each stored instance whose Accession Number
  (else Study Instance UID) names an order is compared with it (Patient ID, name, birth date,
  sex, Study Instance UID). `--identity-policy quarantine` (default) stores a contradicting
  instance but keeps it out of C-FIND, C-MOVE and C-GET until it is resolved; `coerce`
  re-encodes its header with the order's values, the old ones kept in Original Attributes
  Sequence (0400,0561, reason COERCE). Corrections (reconciliation, ADT A08, A40) re-encode the
  stored instances the same way (reason CORRECT).
"""


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def render() -> str:
    sop_rows = [("Verification", VERIFICATION, "SCP")]
    sop_rows += [(uid_name(uid), uid, "SCP") for uid in QR_MODELS]
    sop_rows += [(uid_name(uid), uid, "SCP, and SCU for C-MOVE/C-GET") for uid in STORAGE_SOP_CLASSES.values()]
    sop_rows += [(uid_name(uid), uid, role) for uid, role in WORKFLOW_SOP_CLASSES]
    keys = [
        (level, ", ".join(LEVEL_ATTRIBUTES[level]), ", ".join(k for k, lv in COMPUTED_KEYS.items() if lv == level) or "-")
        for level in LEVELS
    ]
    parts = [
        "# pacsnode DICOM Conformance Statement",
        "",
        "Generated by `pacsnode conformance` from the code's own lists; "
        "`tests/unit/test_conformance.py` fails when this file and the code disagree.",
        "",
        "## SOP classes",
        _table(("SOP class", "UID", "Role"), sop_rows),
        "",
        "## Transfer syntaxes",
        "### Storage (accepted and stored as received)",
        _table(("Transfer syntax", "UID"), [(uid_name(t), t) for t in STORAGE_TRANSFER_SYNTAXES]),
        "",
        "### Verification and Query/Retrieve",
        _table(("Transfer syntax", "UID"), [(uid_name(t), t) for t in QUERY_TRANSFER_SYNTAXES]),
        "",
        "## Query keys with matching support",
        _table(("Level", "Indexed keys", "Computed keys"), keys),
        "",
        _BEHAVIOUR.format(impl_uid=IMPLEMENTATION_CLASS_UID, impl_name=IMPLEMENTATION_VERSION_NAME),
        _WORKFLOW,
    ]
    return "\n".join(parts)
