"""The reconciliation view and the identity changes it (and the HL7 feed) makes.

Items are listed per study: ``mismatch`` (quarantined: held, out of C-FIND/C-MOVE),
``unmatched`` (no order known; stored and visible), ``coerced`` (fixed on store by policy,
listed resolved). Resolving an item links the study to an order, corrects its identity, or
accepts it as received. Every identity change -- resolution, ADT A08 demographics, A40
merge, an order that arrives after its images -- goes the same way: the affected instances
are re-encoded (old values in Original Attributes Sequence), their new blobs written and
fsync'd, then one index transaction swaps the records and writes the audit entry (old and
new values) and the item: the stored headers, the index and the log change together.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Callable

from pacsnode._native import header
from pacsnode.errors import AlreadyResolvedError, ReconciliationError, UnknownItemError
from pacsnode.index.base import InstanceRecord
from pacsnode.index.tables import Tx
from pacsnode.services.identity import (
    CHECKED,
    COERCED,
    PATIENT_KEYS,
    QUARANTINED,
    audit,
    compare,
    lookup,
    now_iso,
    received_identity,
    recode_dataset,
    same,
)
from pacsnode.services.store import index_attributes

LOGGER = logging.getLogger(__name__)

ACTIONS = ("link", "correct", "accept")
STATES = ("open", "resolved", "all")
_BATCH_BYTES = 64 * 1024 * 1024
_SOURCE_AE = 0x00020016


class ReconciliationService:
    def __init__(self, archive) -> None:
        self.archive = archive
        self.index = archive.index
        self.blobs = archive.blobs
        self.tables = archive.tables

    # -- reads ----------------------------------------------------------------------------

    def items(self, state: str = "open") -> list[dict]:
        if state not in STATES:
            raise ReconciliationError(f"state {state!r}: use one of {', '.join(STATES)}")
        with self.tables.read() as tx:
            found = [item for _, item in tx.items("recon") if state == "all" or item["state"] == state]
        return sorted(found, key=lambda i: i["id"], reverse=True)

    def item(self, item_id: str) -> dict:
        with self.tables.read() as tx:
            item = tx.get("recon", _item_key(item_id))
        if item is None:
            raise UnknownItemError(f"no reconciliation item {item_id}")
        return item

    def audit_log(self, study_uid: str | None = None) -> list[dict]:
        with self.tables.read() as tx:
            entries = [e for _, e in tx.items("audit") if study_uid is None or e["study_uid"] == study_uid]
        return entries

    def orders(self) -> list[dict]:
        with self.tables.read() as tx:
            return [o for _, o in tx.items("orders")]

    # -- resolving an item ------------------------------------------------------------------

    def resolve(
        self, item_id: str, action: str, *, accession: str = "", identity: dict | None = None, reason: str = "", by: str = "api"
    ) -> dict:
        item = self.item(item_id)
        if item["state"] != "open":
            raise AlreadyResolvedError(f"item {item['id']} is {item['state']}")
        if action not in ACTIONS:
            raise ReconciliationError(f"action {action!r}: use one of {', '.join(ACTIONS)}")
        study_uid = item["study_uid"]
        if action == "link":
            if not accession:
                raise ReconciliationError("link: give the accession number of the order")
            with self.tables.read() as tx:
                expected = lookup(tx, accession, None)
            if expected is None or expected.accession != accession:
                raise UnknownItemError(f"no order with accession number {accession}")
            changes = {k: v for k, v in expected.values().items() if v}
        elif action == "correct":
            changes = {k: str(v).strip() for k, v in (identity or {}).items() if k in CHECKED and str(v).strip()}
            unknown = sorted(set(identity or {}) - set(CHECKED))
            if unknown or not changes:
                raise ReconciliationError(f"correct: give some of {', '.join(CHECKED)}" + (f" (not {', '.join(unknown)})" if unknown else ""))
        else:
            changes = {}
        visible = list(self.index.instances_under("STUDY", study_uid))
        held = self.index.quarantined(study_uid)
        if not visible and not held and action != "accept":
            raise ReconciliationError(f"study {study_uid} holds no instances any more")
        view = self.index.study_view(study_uid) or {}
        old = {k: str(view.get(k) or (held[0].attrs.get(k) if held else "") or "") for k in changes}

        def finish(tx: Tx) -> None:
            if tx.get("recon", item["id"])["state"] != "open":  # resolved meanwhile (another process)
                raise AlreadyResolvedError(f"item {item['id']} was resolved meanwhile")
            entry = ""
            if changes:
                entry = audit(tx, f"resolve {action}", study_uid, old, changes, by, len(visible) + len(held), item["id"], reason)
            current = tx.get("recon", item["id"])
            current.update(
                state="resolved", quarantined=0,
                resolution={"action": action, "by": by, "at": now_iso(), "reason": reason, "audit": entry,
                            "order": accession, "changes": changes},
            )
            tx.put("recon", item["id"], current)

        self.apply(visible + held, changes, "CORRECT", lambda rec: rec.attrs if rec.quarantined else view, finish)
        LOGGER.info("reconciliation item %s resolved: %s by %s", item["id"], action, by)
        return self.item(item["id"])

    # -- changes the HL7 feed brings -------------------------------------------------------

    def update_patient(self, identity: dict, by: str) -> int:
        """ADT A08 (A01/A04): the archive's instances of this patient take the new demographics."""
        patient_id = identity.get("PatientID", "")
        view = self.index.patient_view(patient_id) if patient_id else None
        if view is None:
            return 0
        changes = {k: identity[k] for k in PATIENT_KEYS[1:] if identity.get(k) and not same(k, view.get(k), identity[k])}
        if not changes:
            return 0
        records = list(self.index.instances_under("PATIENT", patient_id))
        old = {k: str(view.get(k) or "") for k in changes}
        self.apply(records, changes, "CORRECT", lambda rec: view,
                   lambda tx: audit(tx, "patient update", "", old | {"PatientID": patient_id}, changes, by, len(records)))
        LOGGER.info("patient update: %d instance(s) re-encoded (%s)", len(records), by)
        return len(records)

    def merge_patient(self, merged_id: str, identity: dict, by: str) -> int:
        """ADT A40: the merged patient's studies move to the surviving one."""
        view = self.index.patient_view(merged_id)
        if view is None or merged_id == identity.get("PatientID"):
            return 0
        changes = {k: identity[k] for k in PATIENT_KEYS if identity.get(k)}
        records = list(self.index.instances_under("PATIENT", merged_id))
        old = {k: str(view.get(k) or "") for k in changes}
        self.apply(records, changes, "CORRECT", lambda rec: view,
                   lambda tx: audit(tx, "patient merge", "", old, changes, by, len(records)))
        LOGGER.info("patient merge: %d instance(s) moved to the surviving patient (%s)", len(records), by)
        return len(records)

    def order_known(self, accession: str, study_uid: str, by: str) -> list[str]:
        """An order arrived (HL7, or a worklist look-up) after images that named it: its
        open ``unmatched`` items are checked now, under the same policy as on store."""
        with self.tables.read() as tx:
            pending = [i for _, i in tx.items("recon") if i["state"] == "open" and i["kind"] == "unmatched"
                       and ((accession and i["received"].get("AccessionNumber") == accession) or (study_uid and i["study_uid"] == study_uid))]
        return [self._recheck(item, by) for item in pending]

    def look_up_unmatched(self, find: Callable[[str], list | None], by: str, retry_after: float = 300.0) -> int:
        """Ask the RIS's worklist (``find(accession)``: worklist answers, or None when it cannot
        be asked) about the accession numbers of open unmatched items; an answer becomes an
        order and the item is checked against it. Returns the number of orders learnt."""
        now = time.time()
        with self.tables.read() as tx:
            pending = [i for _, i in tx.items("recon") if i["state"] == "open" and i["kind"] == "unmatched"
                       and i["received"].get("AccessionNumber") and now - i.get("looked_up", 0) >= retry_after]
        learnt = 0
        for item in pending:
            accession = item["received"]["AccessionNumber"]
            answers = find(accession)
            if answers is None:
                return learnt  # the RIS is not reachable: try again on a later tick
            with self.tables.write() as tx:
                current = tx.get("recon", item["id"])
                current["looked_up"] = now
                tx.put("recon", item["id"], current)
                answer = next((a for a in answers if str(a.get("AccessionNumber", "")) == accession), None)
                if answer is None or tx.get("orders", accession):
                    continue
                patient_id = str(answer.get("PatientID", "") or "")
                if not patient_id:
                    continue
                if tx.get("ris_patients", patient_id) is None:
                    tx.put("ris_patients", patient_id, {
                        "PatientID": patient_id, "PatientName": str(answer.get("PatientName", "") or ""),
                        "PatientBirthDate": str(answer.get("PatientBirthDate", "") or ""),
                        "PatientSex": str(answer.get("PatientSex", "") or ""), "updated": now_iso(),
                    })
                study_uid = str(answer.get("StudyInstanceUID", "") or "")
                tx.put("orders", accession, {
                    "accession": accession, "patient_id": patient_id, "study_uid": study_uid, "status": "scheduled",
                    "requested_procedure_id": str(answer.get("RequestedProcedureID", "") or ""),
                    "created": now_iso(), "updated": now_iso(), "source": "worklist",
                })
                if study_uid:
                    tx.put("order_study", study_uid, accession)
            learnt += 1
            self.order_known(accession, study_uid, by)
        return learnt

    def _recheck(self, item: dict, by: str) -> str:
        study_uid = item["study_uid"]
        view = self.index.study_view(study_uid) or {}
        with self.tables.read() as tx:
            expected = lookup(tx, view.get("AccessionNumber"), study_uid)
        if expected is None:
            return "unmatched"
        records = list(self.index.instances_under("STUDY", study_uid))
        conflicts, fills = compare(view, expected)
        policy = self.archive.config.identity_policy
        outcome = "matched"
        changes: dict = {}
        if conflicts and policy == "quarantine":
            outcome = QUARANTINED
        elif conflicts or (fills and policy == "coerce"):
            outcome, changes = COERCED, {kw: want for kw, (_, want) in conflicts.items()} | fills

        def finish(tx: Tx) -> None:
            current = tx.get("recon", item["id"])
            current.update(order=expected.accession, matched_by=expected.matched_by, expected=expected.values(),
                           differences=sorted(conflicts), filled=sorted(fills), received=received_identity(view))
            if outcome == QUARANTINED:
                current.update(kind="mismatch", quarantined=len(records))
            else:
                entry = ""
                if changes:
                    entry = audit(tx, "coerced after store", study_uid, {k: str(view.get(k) or "") for k in changes},
                                  changes, by, len(records), item["id"], f"order {expected.accession}")
                current.update(kind=COERCED if changes else current["kind"], state="resolved",
                               resolution={"action": "coerce" if changes else "matched", "by": by, "at": now_iso(),
                                           "audit": entry, "order": expected.accession})
            tx.put("recon", item["id"], current)

        if outcome == QUARANTINED:
            note = {"outcome": QUARANTINED, "item": item["id"]}
            self.apply(records, {}, "COERCE", lambda rec: view, finish, quarantine=note)
        else:
            self.apply(records, changes, "COERCE", lambda rec: view, finish)
        LOGGER.info("unmatched study %s checked against order %s: %s", study_uid, expected.accession, outcome)
        return outcome

    # -- the one way identities change ------------------------------------------------------

    def apply(
        self, records: list[InstanceRecord], changes: dict, reason: str, current: Callable[[InstanceRecord], dict],
        finish: Callable[[Tx], None], quarantine: dict | None = None,
    ) -> int:
        """Re-encode each record whose current values differ from ``changes``, write the new
        blobs durably, then swap the index records and run ``finish`` in one transaction.
        Quarantined records are released (``quarantine`` None) or visible ones quarantined."""
        removed: list[str] = []
        added: list[InstanceRecord] = []
        old_files: list[str] = []
        batch: list = []
        batch_bytes = 0
        for rec in records:
            values = current(rec)
            diff = {k: v for k, v in changes.items() if not same(k, values.get(k), v)}
            if not diff and quarantine is None and not rec.quarantined:
                continue
            if diff or quarantine is not None:
                part10 = self._read(rec)
                meta, offset = header.read_file_meta(part10)
                dataset = memoryview(part10)[offset:]
            if diff:
                source = meta.get(_SOURCE_AE)
                source_ae = source.decode("ascii", "replace").strip("\x00 ") if source else None
                encoded = recode_dataset(dataset, rec.transfer_syntax, diff, reason)
                pending = self.archive.store.prepare(
                    encoded, rec.transfer_syntax, rec.sop_class_uid, rec.sop_instance_uid, source_ae, check_identity=False
                )
                new = pending.record
                new.stored_at = rec.stored_at
                batch.append(pending)
                batch_bytes += new.size
                if self.blobs.local_path(rec.blob_id) is not None:
                    old_files.append(rec.blob_id)
                if batch_bytes >= _BATCH_BYTES:
                    self._write(batch)
                    batch, batch_bytes = [], 0
            elif quarantine is not None:
                new = dataclasses.replace(rec, attrs=index_attributes(dataset, rec.transfer_syntax))
            else:
                new = dataclasses.replace(rec, identity=None)
            new.identity = quarantine
            removed.append(rec.sop_instance_uid)
            added.append(new)
        self._write(batch)
        released = {r.study_uid for r in added if not r.quarantined} if any(r.quarantined for r in records) else set()

        def also(txn) -> None:
            tx = self.tables.bind(txn)
            if self.archive.config.ian:
                # Studies that just left quarantine are announced once stable (services.completion).
                for study_uid in released:
                    tx.put("recent", study_uid, time.time())
            finish(tx)

        self.index.rewrite(removed, added, also)
        for blob_id in old_files:
            self.blobs.delete(blob_id)
        return len(added)

    def _read(self, rec: InstanceRecord) -> bytes:
        path = self.blobs.local_path(rec.blob_id)
        return path.read_bytes() if path is not None else self.blobs.read(rec.blob_id)

    def _write(self, batch: list) -> None:
        if batch:
            for pending, blob_id in zip(batch, self.blobs.put_many([p.chunks for p in batch])):
                pending.record.blob_id = blob_id


def _item_key(item_id: str) -> str:
    text = str(item_id).strip()
    return f"{int(text):012d}" if text.isdigit() else text
