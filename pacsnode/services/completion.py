"""When is a study complete, and who is told (Instance Availability Notification, PS3.4 R).

* With MPPS: the step is COMPLETED and every instance its Performed Series Sequence
  references is held (and not quarantined): its study is announced at once.
* Without MPPS (or one that references nothing): the study has had no new instance for
  ``study_stable_seconds`` and no step of it is still open.

Announcing a study queues one IAN N-CREATE per subscriber (``--ian``; the RIS is one) in the
outbox, listing every instance of the study the archive makes available (quarantined ones
are not: a study held for reconciliation is announced once it is resolved). Instances that
arrive after an announcement make the study recent again, and it is announced again once
stable. ``tick`` runs in the coordinator process, twice a second.
"""
from __future__ import annotations

import logging
import time

from pydicom import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from pacsnode.dicom.uids import UID_ROOT
from pacsnode.index.base import InstanceRecord
from pacsnode.index.tables import Tx
from pacsnode.services.identity import now_iso
from pacsnode.services.mpps import COMPLETED, DISCONTINUED, MPPS_SOP_CLASS, enqueue

LOGGER = logging.getLogger(__name__)

IAN_SOP_CLASS = "1.2.840.10008.5.1.4.33"


def ian_dataset(study_uid: str, records: list[InstanceRecord], view: dict, ae_title: str, order: dict | None,
                mpps_uid: str | None) -> Dataset:
    """The Instance Availability Notification of one study (PS3.3 C.4.23)."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    refs = []
    if mpps_uid:
        ref = Dataset()
        ref.ReferencedSOPClassUID = MPPS_SOP_CLASS
        ref.ReferencedSOPInstanceUID = mpps_uid
        refs.append(ref)
    ds.ReferencedPerformedProcedureStepSequence = Sequence(refs)
    ds.StudyInstanceUID = study_uid
    request = Dataset()
    request.StudyInstanceUID = study_uid
    request.AccessionNumber = (order or {}).get("accession") or view.get("AccessionNumber") or ""
    request.RequestedProcedureID = (order or {}).get("requested_procedure_id", "")
    ds.ReferencedRequestSequence = Sequence([request])
    ds.PatientID = view.get("PatientID") or ""
    ds.PatientName = view.get("PatientName") or ""
    series: dict[str, list[Dataset]] = {}
    for rec in records:
        item = Dataset()
        item.ReferencedSOPClassUID = rec.sop_class_uid
        item.ReferencedSOPInstanceUID = rec.sop_instance_uid
        item.InstanceAvailability = "ONLINE"
        item.RetrieveAETitle = ae_title
        series.setdefault(rec.series_uid, []).append(item)
    items = []
    for series_uid, instances in series.items():
        item = Dataset()
        item.SeriesInstanceUID = series_uid
        item.ReferencedSOPSequence = Sequence(instances)
        items.append(item)
    ds.ReferencedSeriesSequence = Sequence(items)
    return ds


class CompletionWatcher:
    def __init__(self, archive) -> None:
        self.archive = archive
        self.index = archive.index
        self.tables = archive.tables
        self.config = archive.config

    def tick(self, now: float | None = None) -> list[str]:
        """Announce every study that became complete; returns their Study Instance UIDs."""
        now = time.time() if now is None else now
        announced = []
        with self.tables.read() as tx:
            open_steps = [(uid, tx.get("mpps", uid)) for uid, _ in tx.items("mpps_open")]
            recent = [(study, t) for study, t in tx.items("recent")]
        waiting: set[str] = set()  # studies an open (or not yet satisfied) step still speaks for
        for uid, step in open_steps:
            if step is None:
                continue
            if step["state"] == COMPLETED and step["refs"]:
                held = self.index.get_instances(list(step["refs"]))
                if len(held) == len(step["refs"]) and not any(r.quarantined for r in held.values()):
                    studies = sorted({r.study_uid for r in held.values()})
                    for study_uid in studies:
                        self._announce(study_uid, uid, "mpps")
                    announced += studies
                    self._close_step(uid)
                    continue
                waiting.update(step["studies"])
            elif step["state"] in (COMPLETED, DISCONTINUED):
                self._close_step(uid)  # nothing referenced, or abandoned: the stability rule decides
            else:
                waiting.update(step["studies"])
        for study_uid, last in recent:
            if study_uid in announced:
                continue
            if study_uid in waiting or now - last < self.config.study_stable_seconds:
                continue
            self._announce(study_uid, None, "stable", last)
            announced.append(study_uid)
        return announced

    def _close_step(self, uid: str) -> None:
        with self.tables.write() as tx:
            tx.delete("mpps_open", uid)
            step = tx.get("mpps", uid)
            if step is not None:
                step["announced"] = True
                tx.put("mpps", uid, step)

    def _announce(self, study_uid: str, mpps_uid: str | None, why: str, seen: float | None = None) -> None:
        records = list(self.index.instances_under("STUDY", study_uid))
        with self.tables.write() as tx:
            if seen is not None and (tx.get("recent", study_uid) or 0) > seen:
                return  # more arrived while we looked: wait for stability again
            tx.delete("recent", study_uid)
            if not records:
                return
            view = self.index.study_view(study_uid) or {}
            order = self._order(tx, view.get("AccessionNumber"), study_uid)
            ds = ian_dataset(study_uid, records, view, self.config.ae_title, order, mpps_uid)
            uid = generate_uid(prefix=UID_ROOT + "3.")
            for remote in self.config.ian:
                enqueue(tx, remote, "N-CREATE", IAN_SOP_CLASS, uid, ds, f"IAN {study_uid} ({why})")
            tx.put("notified", study_uid, {"at": now_iso(), "instances": len(records), "why": why, "ian": uid, "mpps": mpps_uid or ""})
        LOGGER.info("study %s complete (%s): %d instance(s) announced to %d subscriber(s)", study_uid, why, len(records), len(self.config.ian))

    @staticmethod
    def _order(tx: Tx, accession: str | None, study_uid: str) -> dict | None:
        order = tx.get("orders", accession) if accession else None
        if order is None:
            acc = tx.get("order_study", study_uid)
            order = tx.get("orders", acc) if acc else None
        return order
