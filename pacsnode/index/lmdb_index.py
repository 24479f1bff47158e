"""The LMDB index: msgpack records per level, child lists and secondary keys in dupsort tables.

Tables (one environment, opened after fork in each process):
  patients, studies, series, instances   key -> msgpack record
  blobs                                  inline blob id -> Part 10 bytes of a small instance
  c_patient, c_study, c_series           parent key -> child keys (dupsort)
  ix_pname, ix_sdate, ix_acc, ix_mod     attribute value -> entity key (dupsort)
  quarantine                             study key -> quarantined instance keys (dupsort)
Every write is one transaction, committed with fsync before the caller acknowledges.

A quarantined instance (identity under reconciliation) has an ``instances`` record with
``q`` (why) and ``qa`` (all its attributes) but no place in the hierarchy: C-FIND and
retrieval never see it. Other modules keep their tables in the same environment
(``open_table``), so their writes can share a transaction with the index's (``after_add``,
``rewrite``).
"""
from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

import lmdb
import msgpack

from pacsnode.dicom.attributes import LEVEL_ATTRIBUTES, UNIQUE_KEYS
from pacsnode.dicom.matching import Matcher, _pn_forms
from pacsnode.errors import OutOfResourcesError
from pacsnode.index.base import AddResult, Index, InstanceRecord
from pacsnode.storage.inline import INLINE_LIMIT

LOGGER = logging.getLogger(__name__)

_LEVEL_DB = {"PATIENT": "patients", "STUDY": "studies", "SERIES": "series", "IMAGE": "instances"}
_CHILDREN = {"PATIENT": "c_patient", "STUDY": "c_study", "SERIES": "c_series"}
_PLAIN = ("patients", "studies", "series", "instances", "blobs")
_DUPSORT = ("c_patient", "c_study", "c_series", "ix_pname", "ix_sdate", "ix_acc", "ix_mod", "quarantine")
# Named databases other modules may open in this environment (orders, reconciliation, ...).
_EXTRA_DBS = 24
# LMDB keys (and dupsort values) are limited to 511 bytes; longer values are cut and the
# matcher re-checks every candidate anyway.
_MAX_KEY = 480


def _k(text: str | None) -> bytes:
    # LMDB refuses empty keys; an empty Patient ID is still a (shared) patient.
    return (text or "\x00").encode("utf-8")[:_MAX_KEY]


def _put_secondary(txn: lmdb.Transaction, db, value: str | None, entity_key: bytes) -> None:
    """Index a non-empty attribute value; empty values only ever match universally."""
    if value:
        txn.put(_k(value), entity_key, db=db)


def _pack(obj: dict) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _unpack(raw: bytes) -> dict:
    return msgpack.unpackb(raw, raw=False)


def _level_attrs(attrs: dict, level: str) -> dict:
    return {kw: attrs[kw] for kw in LEVEL_ATTRIBUTES[level] if attrs.get(kw) is not None}


def _date(value: str | None) -> str:
    return (value or "").replace(".", "").replace("-", "")


class LmdbIndex(Index):
    def __init__(self, path: Path, map_size: int = 64 * 1024**3) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.env = lmdb.open(
            str(path),
            map_size=map_size,
            max_dbs=len(_PLAIN) + len(_DUPSORT) + _EXTRA_DBS,
            sync=True,
            metasync=False,  # see write(): the meta page is flushed outside the write lock
            readahead=False,
            max_readers=512,
        )
        self._page_size = self.env.stat()["psize"]
        self.db = {name: self.env.open_db(name.encode()) for name in _PLAIN}
        self.db.update({name: self.env.open_db(name.encode(), dupsort=True) for name in _DUPSORT})
        # Called as after_add(txn, records) inside the transaction that indexes a batch.
        self.after_add: Callable[[lmdb.Transaction, list[InstanceRecord]], None] | None = None

    def open_table(self, name: str, dupsort: bool = False):
        """A named database of another module in this environment (created if missing)."""
        if name not in self.db:
            self.db[name] = self.env.open_db(name.encode(), dupsort=dupsort)
        return self.db[name]

    def close(self) -> None:
        self.env.close()

    @contextlib.contextmanager
    def write(self) -> Iterator[lmdb.Transaction]:
        """A write transaction, durable once the block has exited without an exception.

        The commit flushes the data pages while it holds the environment's write lock (the
        meta page is written, not flushed: metasync off); the flush that makes the meta page
        durable runs after the lock is released, so that other writers (the other workers)
        commit meanwhile. The caller acknowledges nothing before this returns.
        """
        try:
            with self.env.begin(write=True) as txn:
                yield txn
        except lmdb.MapFullError as exc:
            raise OutOfResourcesError("index full: raise index_map_size") from exc
        self._flush()

    def _flush(self) -> None:
        self.env.sync(True)

    # -- small instances' bytes -----------------------------------------------------------

    def keeps_inline(self, size: int) -> bool:
        # Half the map stays for the index itself: past that, small instances go to segments.
        if size > INLINE_LIMIT:
            return False
        info = self.env.info()
        return (info["last_pgno"] + 1) * self._page_size < info["map_size"] // 2

    def read_blob(self, blob_id: str) -> bytes:
        with self.env.begin() as txn:
            raw = txn.get(blob_id.encode(), db=self.db["blobs"])
        if raw is None:
            raise FileNotFoundError(f"no inline blob {blob_id}")
        return raw

    def delete_blob(self, blob_id: str) -> None:
        with self.write() as txn:
            txn.delete(blob_id.encode(), db=self.db["blobs"])

    def _put_inline(self, txn: lmdb.Transaction, rec: InstanceRecord) -> None:
        if rec.inline is not None:
            txn.put(rec.blob_id.encode(), rec.inline, db=self.db["blobs"])

    # -- writes -------------------------------------------------------------------------

    def add_instances(
        self, records: list[InstanceRecord], late: Callable[[], list[InstanceRecord]] | None = None
    ) -> list[AddResult]:
        if not records:
            return []
        with self.write() as txn:
            if late is not None:
                records = records + late()
            results = []
            for record in records:
                raw = txn.get(_k(record.sop_instance_uid), db=self.db["instances"])
                if raw is not None:
                    results.append(AddResult(False, self._instance(record.sop_instance_uid, _unpack(raw))))
                else:
                    self._put_inline(txn, record)
                    if record.quarantined:
                        self._put_quarantined(txn, record)
                    else:
                        self._add(txn, record)
                    results.append(AddResult(True))
            if self.after_add is not None:
                self.after_add(txn, [r for r, res in zip(records, results) if res.added])
            return results

    def replace_instance(self, record: InstanceRecord) -> InstanceRecord:
        with self.write() as txn:
            key = _k(record.sop_instance_uid)
            old = _unpack(txn.get(key, db=self.db["instances"]))
            new = dict(old)
            new.update(
                a=_level_attrs(record.attrs, "IMAGE"),
                cls=record.sop_class_uid,
                ts=record.transfer_syntax,
                blob=record.blob_id,
                size=record.size,
                sha=record.digest,
                t=record.stored_at or time.time(),
            )
            txn.put(key, _pack(new), db=self.db["instances"])
            self._put_inline(txn, record)
            return self._instance(record.sop_instance_uid, old)

    def _add(self, txn: lmdb.Transaction, rec: InstanceRecord) -> None:
        db = self.db
        attrs = rec.attrs
        study_key = _k(rec.study_uid)
        study_raw = txn.get(study_key, db=db["studies"])
        if study_raw is None:
            patient_key = _k(rec.patient_key)
            patient = self._get(txn, "patients", patient_key)
            if patient is None:
                patient = {"a": _level_attrs(attrs, "PATIENT"), "ns": 0, "nse": 0, "ni": 0}
                for form in set(_pn_forms(attrs.get("PatientName") or "")):
                    _put_secondary(txn, db["ix_pname"], form, patient_key)
            study = {"a": _level_attrs(attrs, "STUDY"), "p": rec.patient_key, "ns": 0, "ni": 0, "mod": [], "cls": []}
            patient["ns"] += 1
            txn.put(patient_key, study_key, db=db["c_patient"])
            _put_secondary(txn, db["ix_sdate"], _date(attrs.get("StudyDate")), study_key)
            _put_secondary(txn, db["ix_acc"], attrs.get("AccessionNumber"), study_key)
        else:
            study = _unpack(study_raw)
            if study["p"] != rec.patient_key:
                LOGGER.warning(
                    "instance %s carries another Patient ID than its study %s; filed under the study's patient",
                    rec.sop_instance_uid,
                    rec.study_uid,
                )
            patient_key = _k(study["p"])
            patient = self._get(txn, "patients", patient_key)
        rec.patient_key = study["p"]

        series_key = _k(rec.series_uid)
        series = self._get(txn, "series", series_key)
        if series is None:
            series = {"a": _level_attrs(attrs, "SERIES"), "st": rec.study_uid, "ni": 0}
            study["ns"] += 1
            patient["nse"] += 1
            modality = attrs.get("Modality")
            if modality and modality not in study["mod"]:
                study["mod"].append(modality)
            txn.put(study_key, series_key, db=db["c_study"])
            _put_secondary(txn, db["ix_mod"], modality, series_key)
        if rec.sop_class_uid not in study["cls"]:
            study["cls"].append(rec.sop_class_uid)
        series["ni"] += 1
        study["ni"] += 1
        patient["ni"] += 1

        sop_key = _k(rec.sop_instance_uid)
        txn.put(series_key, sop_key, db=db["c_series"])
        txn.put(sop_key, _pack(self._instance_dict(rec)), db=db["instances"])
        txn.put(series_key, _pack(series), db=db["series"])
        txn.put(study_key, _pack(study), db=db["studies"])
        txn.put(patient_key, _pack(patient), db=db["patients"])

    def _put_quarantined(self, txn: lmdb.Transaction, rec: InstanceRecord) -> None:
        d = self._instance_dict(rec)
        d["q"] = rec.identity
        d["qa"] = {k: v for k, v in rec.attrs.items() if v is not None}
        sop_key = _k(rec.sop_instance_uid)
        txn.put(sop_key, _pack(d), db=self.db["instances"])
        txn.put(_k(rec.study_uid), sop_key, db=self.db["quarantine"])

    def _remove(self, txn: lmdb.Transaction, sop_uid: str) -> None:
        """Take an instance out of the index (the inverse of ``_add``); the entities left
        without instances go too, with their secondary keys."""
        db = self.db
        sop_key = _k(sop_uid)
        d = self._get(txn, "instances", sop_key)
        if d is None:
            return
        txn.delete(sop_key, db=db["instances"])
        if d.get("q") is not None:
            txn.delete(_k(d["st"]), sop_key, db=db["quarantine"])
            return
        series_key, study_key = _k(d["se"]), _k(d["st"])
        txn.delete(series_key, sop_key, db=db["c_series"])
        series = self._get(txn, "series", series_key)
        study = self._get(txn, "studies", study_key)
        patient_key = _k(study["p"])
        patient = self._get(txn, "patients", patient_key)
        for entity in (series, study, patient):
            entity["ni"] -= 1
        if series["ni"] <= 0:
            txn.delete(series_key, db=db["series"])
            txn.delete(study_key, series_key, db=db["c_study"])
            modality = series["a"].get("Modality")
            if modality:
                txn.delete(_k(modality), series_key, db=db["ix_mod"])
            study["ns"] -= 1
            patient["nse"] -= 1
            left = [self._get(txn, "series", k) for k in self._children(txn, "c_study", study_key)]
            study["mod"] = list(dict.fromkeys(m for x in left if x and (m := x["a"].get("Modality"))))
        else:
            txn.put(series_key, _pack(series), db=db["series"])
        if study["ni"] <= 0:
            txn.delete(study_key, db=db["studies"])
            txn.delete(patient_key, study_key, db=db["c_patient"])
            for table, value in (("ix_sdate", _date(study["a"].get("StudyDate"))), ("ix_acc", study["a"].get("AccessionNumber"))):
                if value:
                    txn.delete(_k(value), study_key, db=db[table])
            patient["ns"] -= 1
        else:
            txn.put(study_key, _pack(study), db=db["studies"])
        if patient["ni"] <= 0:
            txn.delete(patient_key, db=db["patients"])
            for form in set(_pn_forms(patient["a"].get("PatientName") or "")):
                if form:
                    txn.delete(_k(form), patient_key, db=db["ix_pname"])
        else:
            txn.put(patient_key, _pack(patient), db=db["patients"])

    def rewrite(
        self,
        removed: list[str],
        added: list[InstanceRecord],
        also: Callable[[lmdb.Transaction], None] | None = None,
    ) -> None:
        """One durable transaction: take these SOP Instance UIDs out, then index these
        records (quarantined ones apart), then ``also(txn)`` (e.g. an audit entry)."""
        with self.write() as txn:
            for uid in removed:
                self._remove(txn, uid)
            for record in added:
                if self._get(txn, "instances", _k(record.sop_instance_uid)) is not None:
                    self._remove(txn, record.sop_instance_uid)
                if record.quarantined:
                    self._put_quarantined(txn, record)
                else:
                    self._add(txn, record)
            if also is not None:
                also(txn)

    def quarantined(self, study_uid: str) -> list[InstanceRecord]:
        """The quarantined instances filed under this Study Instance UID."""
        with self.env.begin() as txn:
            keys = self._children(txn, "quarantine", _k(study_uid))
            records = [(k, self._get(txn, "instances", k)) for k in keys]
        return [self._instance(k.decode("utf-8"), d) for k, d in records if d is not None]

    def patient_view(self, patient_id: str) -> dict | None:
        """The indexed attributes of one patient (by Patient ID), or None."""
        with self.env.begin() as txn:
            patient = self._get(txn, "patients", _k(patient_id))
        return None if patient is None else dict(patient["a"])

    def studies_of(self, patient_id: str) -> list[str]:
        with self.env.begin() as txn:
            return [k.decode("utf-8") for k in self._children(txn, "c_patient", _k(patient_id))]

    def study_view(self, study_uid: str) -> dict | None:
        """Study and patient attributes of one study (its view at STUDY level), or None."""
        with self.env.begin() as txn:
            return self._view(txn, "STUDY", _k(study_uid), {})

    @staticmethod
    def _instance_dict(rec: InstanceRecord) -> dict:
        return {
            "a": _level_attrs(rec.attrs, "IMAGE"),
            "cls": rec.sop_class_uid,
            "se": rec.series_uid,
            "st": rec.study_uid,
            "p": rec.patient_key,
            "ts": rec.transfer_syntax,
            "blob": rec.blob_id,
            "size": rec.size,
            "sha": rec.digest,  # the key predates XXH3: any content digest
            "t": rec.stored_at or time.time(),
        }

    # -- reads --------------------------------------------------------------------------

    def _get(self, txn: lmdb.Transaction, table: str, key: bytes) -> dict | None:
        raw = txn.get(key, db=self.db[table])
        return None if raw is None else _unpack(raw)

    @staticmethod
    def _instance(sop_uid: str, d: dict) -> InstanceRecord:
        return InstanceRecord(
            sop_instance_uid=sop_uid,
            sop_class_uid=d["cls"],
            series_uid=d["se"],
            study_uid=d["st"],
            patient_key=d["p"],
            transfer_syntax=d["ts"],
            blob_id=d["blob"],
            size=d["size"],
            digest=d["sha"],
            attrs=d["qa"] if d.get("q") is not None else d["a"],
            stored_at=d["t"],
            identity=d.get("q"),
        )

    def get_instance(self, sop_instance_uid: str, include_quarantined: bool = False) -> InstanceRecord | None:
        record = self.get_instances([sop_instance_uid]).get(sop_instance_uid)
        if record is not None and record.quarantined and not include_quarantined:
            return None  # held, but not available until its identity is resolved
        return record

    def get_instances(self, sop_instance_uids: list[str]) -> dict[str, InstanceRecord]:
        found = {}
        with self.env.begin() as txn:
            for uid in sop_instance_uids:
                d = self._get(txn, "instances", _k(uid))
                if d is not None:
                    found[uid] = self._instance(uid, d)
        return found

    def _children(self, txn: lmdb.Transaction, table: str, key: bytes) -> list[bytes]:
        cur = txn.cursor(db=self.db[table])
        return list(cur.iternext_dup(keys=False)) if cur.set_key(key) else []

    def _dup_lookup(self, txn: lmdb.Transaction, table: str, keys: Iterable[str]) -> list[bytes]:
        out: list[bytes] = []
        for key in keys:
            out.extend(self._children(txn, table, _k(key)))
        return out

    def _dup_range(self, txn: lmdb.Transaction, table: str, lo: bytes, hi: bytes | None) -> Iterator[bytes]:
        cur = txn.cursor(db=self.db[table])
        if not cur.set_range(lo):
            return
        for key, value in cur:
            if hi is not None and key > hi:
                return
            yield value

    def _dup_prefix(self, txn: lmdb.Transaction, table: str, prefix: str) -> Iterator[bytes]:
        p = _k(prefix)
        cur = txn.cursor(db=self.db[table])
        if not cur.set_range(p):
            return
        for key, value in cur:
            if not key.startswith(p):
                return
            yield value

    def _candidates(self, txn: lmdb.Transaction, level: str, m: dict[str, Matcher]) -> Iterable[bytes]:
        """Pick the narrowest access path the query allows; the matchers re-check every hit."""

        def exact(kw: str) -> tuple[str, ...] | None:
            return m[kw].exact if kw in m and m[kw].exact is not None else None

        unique = exact(UNIQUE_KEYS[level])
        if unique is not None:
            return [_k(u) for u in unique]
        if level == "IMAGE":
            if (series := exact("SeriesInstanceUID")) is not None:
                return self._dup_lookup(txn, "c_series", series)
            if (studies := exact("StudyInstanceUID")) is not None:
                return [i for s in self._dup_lookup(txn, "c_study", studies) for i in self._children(txn, "c_series", s)]
        if level == "SERIES":
            if (studies := exact("StudyInstanceUID")) is not None:
                return self._dup_lookup(txn, "c_study", studies)
        if level == "STUDY":
            if (pids := exact("PatientID")) is not None:
                return self._dup_lookup(txn, "c_patient", pids)
            if (acc := exact("AccessionNumber")) is not None:
                return self._dup_lookup(txn, "ix_acc", acc)
            if (dates := exact("StudyDate")) is not None:
                return self._dup_lookup(txn, "ix_sdate", [_date(d) for d in dates])
            if "StudyDate" in m and m["StudyDate"].range is not None:
                lo, hi = m["StudyDate"].range
                return list(self._dup_range(txn, "ix_sdate", _k(lo or "0"), _k(hi) if hi else None))
        if level in ("PATIENT", "STUDY") and "PatientName" in m:
            pm = m["PatientName"]
            patients: list[bytes] | None = None
            if pm.exact is not None:
                patients = self._dup_lookup(txn, "ix_pname", pm.exact)
            elif pm.prefix:
                patients = list(self._dup_prefix(txn, "ix_pname", pm.prefix))
            if patients is not None:
                patients = list(dict.fromkeys(patients))
                if level == "PATIENT":
                    return patients
                return [s for p in patients for s in self._children(txn, "c_patient", p)]
        if level == "SERIES" and (mods := exact("Modality")) is not None:
            return self._dup_lookup(txn, "ix_mod", mods)
        return txn.cursor(db=self.db[_LEVEL_DB[level]]).iternext(values=False)

    def find(self, level: str, matchers: dict[str, Matcher]) -> Iterator[dict]:
        with self.env.begin() as txn:
            cache: dict[tuple[str, bytes], dict | None] = {}
            seen: set[bytes] = set()
            for key in self._candidates(txn, level, matchers):
                if key in seen:
                    continue
                seen.add(key)
                view = self._view(txn, level, key, cache)
                if view is not None and all(matcher(view.get(kw)) for kw, matcher in matchers.items()):
                    yield view

    def _cached(self, txn: lmdb.Transaction, cache: dict, table: str, key: bytes) -> dict | None:
        if (table, key) not in cache:
            cache[(table, key)] = self._get(txn, table, key)
        return cache[(table, key)]

    def _view(self, txn: lmdb.Transaction, level: str, key: bytes, cache: dict) -> dict | None:
        """Merge the entity's attributes with its ancestors' and its computed keys."""
        view: dict = {}
        rec = self._get(txn, _LEVEL_DB[level], key)
        if rec is None or rec.get("q") is not None:  # quarantined: not found until resolved
            return None
        if level == "IMAGE":
            view.update(rec["a"], SOPClassUID=rec["cls"], _blob=rec["blob"], _ts=rec["ts"])
            series = self._cached(txn, cache, "series", _k(rec["se"]))
        else:
            series = rec if level == "SERIES" else None
        if series is not None:
            view.update(series["a"], NumberOfSeriesRelatedInstances=series["ni"])
            study = self._cached(txn, cache, "studies", _k(series["st"]))
        else:
            study = rec if level == "STUDY" else None
        if study is not None:
            view.update(
                study["a"],
                NumberOfStudyRelatedSeries=study["ns"],
                NumberOfStudyRelatedInstances=study["ni"],
                ModalitiesInStudy=study["mod"],
                SOPClassesInStudy=study["cls"],
            )
            patient = self._cached(txn, cache, "patients", _k(study["p"]))
        else:
            patient = rec
        if patient is not None:
            view.update(
                patient["a"],
                NumberOfPatientRelatedStudies=patient["ns"],
                NumberOfPatientRelatedSeries=patient["nse"],
                NumberOfPatientRelatedInstances=patient["ni"],
            )
        view["_key"] = key.decode("utf-8", "replace")
        return view

    def instances_under(self, level: str, key: str) -> Iterator[InstanceRecord]:
        with self.env.begin() as txn:
            keys = [_k(key)]
            for parent in ("PATIENT", "STUDY", "SERIES")[("PATIENT", "STUDY", "SERIES", "IMAGE").index(level):]:
                keys = [c for k in keys for c in self._children(txn, _CHILDREN[parent], k)]
            records = [(k, self._get(txn, "instances", k)) for k in keys]
        for k, d in records:
            if d is not None and d.get("q") is None:
                yield self._instance(k.decode("utf-8"), d)
