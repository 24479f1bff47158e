"""The status tracker: allowed transitions as data, a timeline entry for every change, and
the pluggable rule for what MPPS COMPLETED means."""
from __future__ import annotations

from risnode.errors import Conflict
from risnode.records import (
    ARRIVED,
    BILLED,
    CANCELLED,
    DISCONTINUED,
    DISTRIBUTED,
    EXAM_COMPLETE,
    IN_PROGRESS,
    ORDERED,
    REPORTED,
    SCHEDULED,
    Order,
)
from risnode.services.context import Context

# status -> the statuses it may move to. Re-entering "scheduled" is a reschedule and
# "reported" a new report version; "distributed"/"billed" follow their ACKs.
TRANSITIONS: dict[str, frozenset[str]] = {
    ORDERED: frozenset({SCHEDULED, CANCELLED, DISCONTINUED}),
    SCHEDULED: frozenset({SCHEDULED, ARRIVED, IN_PROGRESS, CANCELLED, DISCONTINUED}),
    ARRIVED: frozenset({SCHEDULED, IN_PROGRESS, CANCELLED, DISCONTINUED}),
    IN_PROGRESS: frozenset({EXAM_COMPLETE, DISCONTINUED}),
    EXAM_COMPLETE: frozenset({REPORTED}),
    REPORTED: frozenset({REPORTED, DISTRIBUTED, BILLED}),
    DISTRIBUTED: frozenset({REPORTED, BILLED}),
    BILLED: frozenset({REPORTED}),
    CANCELLED: frozenset(),
    DISCONTINUED: frozenset(),
}
# Steps a modality may still perform: offered on the worklist.
ACTIVE = frozenset({ORDERED, SCHEDULED, ARRIVED, IN_PROGRESS})


def can_move(order: Order, status: str) -> bool:
    return status in TRANSITIONS[order.status]


def move(order: Order, status: str, ctx: Context, event: str | None = None, note: str = "") -> None:
    if not can_move(order, status):
        raise Conflict(f"order {order.accession} is {order.status}: it cannot become {status}")
    order.status = status
    record(order, event or status, ctx, note)


def record(order: Order, event: str, ctx: Context, note: str = "") -> None:
    """A timeline entry; the status recorded is the order's status after the change."""
    entry = {"at": ctx.at, "status": order.status, "event": event, "source": ctx.source}
    if note:
        entry["note"] = note
    order.timeline.append(entry)


class CompletionPolicy:
    """Decides the order's status when the modality reports MPPS COMPLETED, and when the
    PACS announces the study complete (Instance Availability Notification)."""

    name = ""

    def after_mpps_completed(self, order: Order) -> str | None:
        raise NotImplementedError

    def after_study_available(self, order: Order) -> str | None:
        return None


class Standalone(CompletionPolicy):
    """The RIS runs alone: the modality's word is enough."""

    name = "standalone"

    def after_mpps_completed(self, order: Order) -> str | None:
        return EXAM_COMPLETE


class PacsDecides(CompletionPolicy):
    """The PACS confirms the images arrived; MPPS COMPLETED is only recorded."""

    name = "pacs"

    def after_mpps_completed(self, order: Order) -> str | None:
        return None

    def after_study_available(self, order: Order) -> str | None:
        # The PACS holds every instance: the exam is done unless it already moved on.
        return EXAM_COMPLETE if order.status in (ORDERED, SCHEDULED, ARRIVED, IN_PROGRESS) else None


POLICIES: dict[str, CompletionPolicy] = {p.name: p for p in (Standalone(), PacsDecides())}
