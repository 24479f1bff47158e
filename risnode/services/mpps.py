"""Modality Performed Procedure Step (PS3.4 Annex F) as a state table.

``TABLE[(state, event)] -> (action, next state)``: the state is the instance's Performed
Procedure Step Status (None before N-CREATE), the event is the request with the status it
asks for. Each action is a small function; a refusal raises MppsError with its status.
"""
from __future__ import annotations

import logging

from pydicom import Dataset

from risnode.errors import Conflict, MppsError
from risnode.records import DISCONTINUED, IN_PROGRESS, Order
from risnode.services import orders as order_service
from risnode.services import status
from risnode.services.context import Context
from risnode.services.status import CompletionPolicy
from risnode.store import mpps as mpps_store
from risnode.store import orders as order_store
from risnode.store.db import Tx

LOGGER = logging.getLogger(__name__)

# PS3.4 F.7.2 / PS3.7 C statuses.
SUCCESS = 0x0000
INVALID_ATTRIBUTE_VALUE = 0x0106
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
NO_SUCH_OBJECT_INSTANCE = 0x0112
MISSING_ATTRIBUTE = 0x0120
# Error ID (0000,0903) with PROCESSING_FAILURE: "may no longer be updated".
MAY_NO_LONGER_BE_UPDATED = 0xA710

STATE_IN_PROGRESS, STATE_COMPLETED, STATE_DISCONTINUED = "IN PROGRESS", "COMPLETED", "DISCONTINUED"
N_CREATE, N_CREATE_INVALID = "N-CREATE", "N-CREATE(not IN PROGRESS)"
N_SET, N_SET_COMPLETED, N_SET_DISCONTINUED, N_SET_INVALID = "N-SET", "N-SET(COMPLETED)", "N-SET(DISCONTINUED)", "N-SET(bad status)"


def classify(request: str, status_value: str | None) -> str:
    value = (status_value or "").strip().upper()
    if request == "N-CREATE":
        return N_CREATE if value == STATE_IN_PROGRESS else N_CREATE_INVALID
    return {"": N_SET, STATE_IN_PROGRESS: N_SET, STATE_COMPLETED: N_SET_COMPLETED, STATE_DISCONTINUED: N_SET_DISCONTINUED}.get(value, N_SET_INVALID)


class _Step:
    """What an action works with."""

    def __init__(self, tx: Tx, uid: str, attrs: Dataset, ctx: Context, policy: CompletionPolicy, stored: dict | None) -> None:
        self.tx, self.uid, self.attrs, self.ctx, self.policy, self.stored = tx, uid, attrs, ctx, policy, stored


def create(step: _Step) -> None:
    for keyword in ("ScheduledStepAttributesSequence", "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime"):
        if keyword not in step.attrs:
            raise MppsError(MISSING_ATTRIBUTE, f"{keyword} is required")
    _save(step, step.attrs, STATE_IN_PROGRESS)
    for order in _orders(step.tx, step.attrs):
        order.performed = {"mpps_uid": step.uid, "status": STATE_IN_PROGRESS, "station_ae": str(step.attrs.get("PerformedStationAETitle", "")),
                           "start": _iso(step.attrs, "Start"), "end": "", "series": []}
        _move(order, IN_PROGRESS, step)
        order_store.put(step.tx, order)


def update(step: _Step) -> None:
    _save(step, _merged(step), STATE_IN_PROGRESS)


def complete(step: _Step) -> None:
    merged = _merged(step)
    for keyword in ("PerformedProcedureStepEndDate", "PerformedProcedureStepEndTime", "PerformedSeriesSequence"):
        if not merged.get(keyword):
            raise MppsError(MISSING_ATTRIBUTE, f"{keyword} is required to complete")
    _save(step, merged, STATE_COMPLETED)
    for order in _orders(step.tx, merged):
        _performed(order, merged, STATE_COMPLETED, step)
        new = step.policy.after_mpps_completed(order)
        if new:
            _move(order, new, step)
        else:
            status.record(order, "mpps completed", step.ctx, f"{step.policy.name} policy: status kept")
        order_store.put(step.tx, order)


def discontinue(step: _Step) -> None:
    merged = _merged(step)
    _save(step, merged, STATE_DISCONTINUED)
    for order in _orders(step.tx, merged):
        _performed(order, merged, STATE_DISCONTINUED, step)
        if status.can_move(order, DISCONTINUED):
            order_service.end(step.tx, order, DISCONTINUED, step.ctx, "MPPS DISCONTINUED")
        else:
            status.record(order, "mpps discontinued", step.ctx, f"order is {order.status}")
        order_store.put(step.tx, order)


def refuse_duplicate(step: _Step) -> None:
    raise MppsError(DUPLICATE_SOP_INSTANCE, "an MPPS with this SOP Instance UID exists")


def refuse_unknown(step: _Step) -> None:
    raise MppsError(NO_SUCH_OBJECT_INSTANCE, "no MPPS with this SOP Instance UID")


def refuse_final(step: _Step) -> None:
    raise MppsError(PROCESSING_FAILURE, "Performed Procedure Step Object may no longer be updated")


def refuse_status(step: _Step) -> None:
    raise MppsError(INVALID_ATTRIBUTE_VALUE, "Performed Procedure Step Status: use IN PROGRESS, COMPLETED or DISCONTINUED")


TABLE = {
    (None, N_CREATE): (create, STATE_IN_PROGRESS),
    (None, N_CREATE_INVALID): (refuse_status, None),
    (None, N_SET): (refuse_unknown, None),
    (None, N_SET_COMPLETED): (refuse_unknown, None),
    (None, N_SET_DISCONTINUED): (refuse_unknown, None),
    (None, N_SET_INVALID): (refuse_unknown, None),
    (STATE_IN_PROGRESS, N_SET): (update, STATE_IN_PROGRESS),
    (STATE_IN_PROGRESS, N_SET_COMPLETED): (complete, STATE_COMPLETED),
    (STATE_IN_PROGRESS, N_SET_DISCONTINUED): (discontinue, STATE_DISCONTINUED),
    (STATE_IN_PROGRESS, N_SET_INVALID): (refuse_status, STATE_IN_PROGRESS),
}
for _final in (STATE_COMPLETED, STATE_DISCONTINUED):
    for _event in (N_SET, N_SET_COMPLETED, N_SET_DISCONTINUED, N_SET_INVALID):
        TABLE[(_final, _event)] = (refuse_final, _final)
for _state in (STATE_IN_PROGRESS, STATE_COMPLETED, STATE_DISCONTINUED):
    TABLE[(_state, N_CREATE)] = TABLE[(_state, N_CREATE_INVALID)] = (refuse_duplicate, _state)


def handle(tx: Tx, request: str, uid: str, attrs_json: dict, ctx: Context, policy: CompletionPolicy) -> str:
    """Apply one N-CREATE or N-SET; returns the new state or raises MppsError."""
    attrs = Dataset.from_json(attrs_json)
    stored = mpps_store.get(tx, uid)
    state = stored["state"] if stored else None
    event = classify(request, attrs.get("PerformedProcedureStepStatus"))
    action, next_state = TABLE[(state, event)]
    action(_Step(tx, uid, attrs, ctx, policy, stored))
    LOGGER.info("MPPS %s: %s in %s -> %s", uid, event, state or "(none)", next_state)
    return next_state


# -- helpers -----------------------------------------------------------------------------


def _merged(step: _Step) -> Dataset:
    merged = Dataset.from_json(step.stored["dataset"])
    for elem in step.attrs:
        merged[elem.tag] = elem
    return merged


def _save(step: _Step, ds: Dataset, state: str) -> None:
    mpps_store.put(step.tx, step.uid, {"state": state, "dataset": ds.to_json_dict(), "updated": step.ctx.at})


def _orders(tx: Tx, ds: Dataset) -> list[Order]:
    """The orders the step performs, found by accession number or SPS ID."""
    found: dict[str, Order] = {}
    for item in ds.get("ScheduledStepAttributesSequence", []):
        order = None
        if item.get("AccessionNumber"):
            order = order_store.get(tx, str(item.AccessionNumber))
        if order is None and item.get("ScheduledProcedureStepID"):
            order = order_store.by_key(tx, f"sps/{item.ScheduledProcedureStepID}")
        if order is not None:
            found[order.accession] = order
    if not found:
        LOGGER.info("MPPS for no known order (unscheduled)")
    return list(found.values())


def _move(order: Order, new: str, step: _Step) -> None:
    try:
        status.move(order, new, step.ctx)
    except Conflict as exc:
        # The modality reports what happened; the order keeps a trace even when it cannot follow.
        status.record(order, f"mpps {new}", step.ctx, str(exc))


def _iso(ds: Dataset, which: str) -> str:
    date, time = str(ds.get(f"PerformedProcedureStep{which}Date", "")), str(ds.get(f"PerformedProcedureStep{which}Time", ""))
    if len(date) != 8:
        return ""
    time = (time.split(".")[0] + "000000")[:6]
    return f"{date[:4]}-{date[4:6]}-{date[6:]}T{time[:2]}:{time[2:4]}:{time[4:6]}"


def _performed(order: Order, ds: Dataset, state: str, step: _Step) -> None:
    series = [{
        "uid": str(s.get("SeriesInstanceUID", "")), "description": str(s.get("SeriesDescription", "")),
        "images": len(s.get("ReferencedImageSequence", [])),
    } for s in ds.get("PerformedSeriesSequence", [])]
    order.performed = {**order.performed, "mpps_uid": step.uid, "status": state, "end": _iso(ds, "End"), "series": series}
    order.performed.setdefault("start", _iso(ds, "Start"))
    order.performed.setdefault("station_ae", str(ds.get("PerformedStationAETitle", "")))
