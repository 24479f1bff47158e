"""Pure rules: accession numbers, slots, the MPPS state table, status transitions."""
from __future__ import annotations

from datetime import date, datetime

import pytest

from risnode.config import RisConfig, Schedule, build
from risnode.errors import ConfigError, Conflict, RisError
from risnode.records import STATUSES, Order
from risnode.services import mpps, status
from risnode.services.accession import check_pattern, next_accession
from risnode.services.context import Context
from risnode.services.scheduling import next_free_slot, slots


def counter():
    counts: dict[str, int] = {}

    def next_value(key: str) -> int:
        counts[key] = counts.get(key, 0) + 1
        return counts[key]

    return next_value, counts


def test_accession_numbers_count_per_day_and_skip_taken():
    next_value, counts = counter()
    day = datetime(2024, 5, 1)
    assert next_accession("{YY}{MM}{DD}{SEQ:5}", day, next_value, lambda a: False) == "24050100001"
    assert next_accession("{YY}{MM}{DD}{SEQ:5}", day, next_value, lambda a: a == "24050100002") == "24050100003"
    assert next_accession("{YY}{MM}{DD}{SEQ:5}", datetime(2024, 5, 2), next_value, lambda a: False) == "24050200001"
    assert next_accession("ACC-{YYYY}-{SEQ:2}", day, next_value, lambda a: False) == "ACC-2024-01"
    assert set(counts) == {"accession/240501{SEQ}", "accession/240502{SEQ}", "accession/ACC-2024-{SEQ}"}


def test_accession_numbers_widen_then_stop_at_16():
    next_value, counts = counter()
    counts["accession/X{SEQ}"] = 99
    assert next_accession("X{SEQ:2}", datetime(2024, 1, 1), next_value, lambda a: False) == "X100"
    counts["accession/X{SEQ}"] = 10**15
    with pytest.raises(RisError, match="exhausted"):
        next_accession("X{SEQ:2}", datetime(2024, 1, 1), next_value, lambda a: False)


@pytest.mark.parametrize("pattern", ["ACC", "{SEQ:2}{SEQ:2}", "A B{SEQ:3}", "{YYYY}{MM}{DD}{SEQ:10}", "A\\{SEQ:3}"])
def test_bad_accession_patterns(pattern):
    with pytest.raises(ConfigError):
        check_pattern(pattern)


def test_slots_and_next_free_slot():
    schedule = Schedule("CT", open="08:00", close="10:00", slot_minutes=30, weekdays=(0, 1, 2, 3, 4))
    monday = date(2024, 4, 29)
    assert [s.strftime("%H:%M") for s in slots(schedule, monday)] == ["08:00", "08:30", "09:00", "09:30"]
    assert slots(schedule, date(2024, 4, 28)) == []  # Sunday
    booked = {"2024-04-29": {"2024-04-29T09:00:00"}}
    find = lambda after: next_free_slot(schedule, lambda d: booked.get(d.isoformat(), set()), after)
    assert find(datetime(2024, 4, 29, 8, 40)) == datetime(2024, 4, 29, 9, 30)
    assert find(datetime(2024, 4, 29, 9, 45)) == datetime(2024, 4, 30, 8, 0)
    assert find(datetime(2024, 5, 3, 12, 0)) == datetime(2024, 5, 6, 8, 0)  # Friday evening -> Monday


def test_fully_booked_schedule_says_so():
    schedule = Schedule("CT", open="08:00", close="08:30", slot_minutes=30)
    with pytest.raises(RisError, match="no free CT slot"):
        next_free_slot(schedule, lambda d: {f"{d.isoformat()}T08:00:00"}, datetime(2024, 1, 1))


def test_mpps_table_covers_every_state_and_event():
    states = (None, mpps.STATE_IN_PROGRESS, mpps.STATE_COMPLETED, mpps.STATE_DISCONTINUED)
    events = (mpps.N_CREATE, mpps.N_CREATE_INVALID, mpps.N_SET, mpps.N_SET_COMPLETED, mpps.N_SET_DISCONTINUED, mpps.N_SET_INVALID)
    assert set(mpps.TABLE) == {(s, e) for s in states for e in events}
    assert mpps.TABLE[(None, mpps.N_CREATE)] == (mpps.create, "IN PROGRESS")
    assert mpps.TABLE[("IN PROGRESS", mpps.N_SET_COMPLETED)] == (mpps.complete, "COMPLETED")
    for final in ("COMPLETED", "DISCONTINUED"):
        for event in (mpps.N_SET, mpps.N_SET_COMPLETED, mpps.N_SET_DISCONTINUED):
            assert mpps.TABLE[(final, event)][0] is mpps.refuse_final
    assert mpps.classify("N-CREATE", "IN PROGRESS") == mpps.N_CREATE
    assert mpps.classify("N-CREATE", "COMPLETED") == mpps.N_CREATE_INVALID
    assert mpps.classify("N-SET", None) == mpps.N_SET and mpps.classify("N-SET", "done") == mpps.N_SET_INVALID


def test_status_transitions_and_timeline():
    ctx = Context(RisConfig(), datetime(2024, 5, 1, 9), "test")
    order = Order(accession="A", patient_id="P")
    status.move(order, "scheduled", ctx)
    status.move(order, "arrived", ctx, note="desk")
    with pytest.raises(Conflict):
        status.move(order, "reported", ctx)
    assert [(e["status"], e["source"]) for e in order.timeline] == [("scheduled", "test"), ("arrived", "test")]
    assert set(status.TRANSITIONS) == set(STATUSES) and all(t <= set(STATUSES) for t in status.TRANSITIONS.values())
    assert status.POLICIES["standalone"].after_mpps_completed(order) == "exam_complete"
    assert status.POLICIES["pacs"].after_mpps_completed(order) is None


def test_config_from_toml_values():
    config = build({"schedule": {"ct": {"station_ae": "CT1", "weekdays": ["mon", "tue"], "slot_minutes": 15}},
                    "station": ["MR=MR1"], "ehr": "ehr.local:2576"})
    assert config.schedule("CT").station_ae == "CT1" and config.schedule("CT").weekdays == (0, 1)
    assert config.schedule("mr").station_ae == "MR1" and config.schedule("US").station_ae == ""
    assert str(config.billing_endpoint) == "ehr.local:2576"
    with pytest.raises(ConfigError):
        build({"schedule": {"CT": {"open": "18:00", "close": "08:00"}}})
