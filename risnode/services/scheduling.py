"""The next free slot of a modality's schedule."""
from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Callable

from risnode.config import Schedule
from risnode.errors import RisError

HORIZON_DAYS = 366


def _at(day: date, hhmm: str) -> datetime:
    hours, minutes = (int(x) for x in hhmm.split(":"))
    return datetime.combine(day, datetime.min.time()) + timedelta(hours=hours, minutes=minutes)


def slots(schedule: Schedule, day: date) -> list[datetime]:
    """Every slot start of ``day`` (none on a closed weekday)."""
    if day.weekday() not in schedule.weekdays:
        return []
    step = timedelta(minutes=schedule.slot_minutes)
    start, close = _at(day, schedule.open), _at(day, schedule.close)
    found = []
    while start + step <= close:
        found.append(start)
        start += step
    return found


def next_free_slot(schedule: Schedule, booked: Callable[[date], set[str]], after: datetime) -> datetime:
    """The first slot starting at or after ``after`` that nothing is booked on.

    ``booked(day)`` gives the ISO start times already taken that day."""
    for offset in range(HORIZON_DAYS):
        day = after.date() + timedelta(days=offset)
        candidates = [s for s in slots(schedule, day) if s >= after]
        if not candidates:
            continue
        taken = booked(day)
        for start in candidates:
            if start.isoformat(timespec="seconds") not in taken:
                return start
    raise RisError(f"no free {schedule.modality} slot in the next {HORIZON_DAYS} days: widen its schedule")
