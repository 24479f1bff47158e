"""Patients by ID; a merged-away ID resolves to the surviving patient."""
from __future__ import annotations

from risnode.records import Patient
from risnode.store.db import Tx


def get(tx: Tx, patient_id: str) -> Patient | None:
    data = tx.get("patients", patient_id)
    return Patient.from_dict(data) if data else None


def surviving_id(tx: Tx, patient_id: str) -> str:
    seen = set()
    while (target := tx.get("aliases", patient_id)) and patient_id not in seen:
        seen.add(patient_id)
        patient_id = target
    return patient_id


def resolve(tx: Tx, patient_id: str) -> Patient | None:
    return get(tx, surviving_id(tx, patient_id))


def put(tx: Tx, patient: Patient) -> None:
    tx.put("patients", patient.id, patient.to_dict())


def alias(tx: Tx, merged_id: str, surviving: str) -> None:
    tx.put("aliases", merged_id, surviving)
