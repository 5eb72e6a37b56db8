"""The alert lifecycle as pure logic, on a fake clock: delay, open, remind, escalate, acknowledge, clear."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from discovery.alerting.engine import Alert, AlertEngine, Burst, Condition, Timing
from discovery.alerting.kinds import Severity

T0 = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
TIMING = Timing(delay=30, remind_interval=600, escalate_after=900)
FIRE = Condition("alarm:3", "alarm", Severity.CRITICAL, "alarm bit 3")
HOT = Condition("rule:too_hot", "value_rule", Severity.CRITICAL, "too_hot", value=35.0)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def run(engine: AlertEngine, seconds: float) -> list[Burst]:
    return engine.tick(at(seconds))


def test_condition_must_hold_for_the_delay_before_the_alert_opens() -> None:
    engine = AlertEngine(TIMING)
    engine.update("farm-1", "alarms", [FIRE], at(0))
    assert run(engine, 29) == []
    [burst] = run(engine, 30)
    assert [a.key for a in burst.opened] == ["alarm:3"]
    assert burst.opened[0].since == at(0) and burst.opened[0].opened == at(30)


def test_a_condition_that_clears_within_the_delay_opens_nothing() -> None:
    engine = AlertEngine(TIMING)
    engine.update("farm-1", "alarms", [FIRE], at(0))
    engine.update("farm-1", "alarms", [], at(10))
    engine.update("farm-1", "alarms", [FIRE], at(20))  # back again: the delay starts over
    assert run(engine, 40) == []
    assert [a.key for a in run(engine, 50)[0].opened] == ["alarm:3"]


def test_reminders_until_acknowledged_then_none() -> None:
    engine = AlertEngine(TIMING)
    engine.update("farm-1", "alarms", [FIRE], at(0))
    [opened] = run(engine, 30)
    assert run(engine, 629) == []
    [reminder] = run(engine, 630)
    assert [a.id for a in reminder.reminded] == [opened.opened[0].id]
    engine.acknowledge(opened.opened[0].id, "farmer", at(700))
    for second in (1230, 1830, 5000):
        assert run(engine, second) == []  # no reminder, no escalation
    [alert] = engine.alerts("farm-1")
    assert (alert.state, alert.acknowledged_by) == ("acknowledged", "farmer")


def test_not_acknowledged_it_escalates_to_tier_two_once() -> None:
    engine = AlertEngine(TIMING)
    engine.update("farm-1", "alarms", [FIRE], at(0))
    run(engine, 30)
    run(engine, 630)
    [burst] = run(engine, 930)
    assert [a.key for a in burst.escalated] == ["alarm:3"] and burst.reminded == []
    assert engine.alerts()[0].tier == 2
    [reminder] = run(engine, 1230)
    assert reminder.escalated == [] and reminder.reminded[0].tier == 2


def test_a_tier_that_no_channel_reached_escalates_at_once() -> None:
    engine = AlertEngine(TIMING)
    engine.update("farm-1", "alarms", [FIRE], at(0))
    run(engine, 30)
    engine.tier_failed("farm-1")
    [burst] = run(engine, 31)
    assert [a.key for a in burst.escalated] == ["alarm:3"]


def test_all_clear_when_the_condition_clears_and_only_for_what_was_told() -> None:
    engine = AlertEngine(TIMING)
    engine.update("farm-1", "alarms", [FIRE], at(0))
    run(engine, 30)
    engine.update("farm-1", "alarms", [], at(100))
    [burst] = run(engine, 101)
    assert [a.key for a in burst.cleared] == ["alarm:3"] and burst.cleared[0].cleared == at(100)
    assert engine.alerts() == []


def test_each_source_clears_only_its_own_conditions() -> None:
    engine = AlertEngine(TIMING)
    engine.update("farm-1", "alarms", [FIRE], at(0))
    engine.update("farm-1", "rules", [HOT], at(0))
    run(engine, 30)
    engine.update("farm-1", "rules", [], at(40))
    [burst] = run(engine, 41)
    assert [a.key for a in burst.cleared] == ["rule:too_hot"]
    assert [a.key for a in engine.alerts()] == ["alarm:3"]


def test_one_burst_per_farm_for_conditions_that_open_together() -> None:
    engine = AlertEngine(TIMING)
    other = Condition("alarm:4", "alarm", Severity.CRITICAL, "alarm bit 4")
    engine.update("farm-1", "alarms", [FIRE, other], at(0))
    engine.update("farm-2", "alarms", [FIRE], at(0))
    bursts = run(engine, 30)
    assert sorted((b.farm_id, len(b.opened)) for b in bursts) == [("farm-1", 2), ("farm-2", 1)]


def test_a_latching_event_opens_at_once_and_acknowledging_closes_it() -> None:
    engine = AlertEngine(TIMING)
    dropped = Condition("backlog_dropped", "backlog_dropped", Severity.WARNING, value=12, latching=True)
    engine.update("farm-1", "events", [dropped], at(0))
    [burst] = run(engine, 0)
    engine.update("farm-1", "events", [], at(5))  # an event source saying nothing more does not clear it
    assert engine.alerts()[0].state == "open"
    engine.acknowledge(burst.opened[0].id, "farmer", at(10))
    assert engine.alerts() == [] and run(engine, 20) == []


def test_restarted_from_stored_alerts_it_repeats_nothing_and_forgets_nothing() -> None:
    engine = AlertEngine(TIMING)
    engine.update("farm-1", "alarms", [FIRE], at(0))
    engine.update("farm-1", "rules", [HOT], at(0))
    run(engine, 30)
    hot = next(a for a in engine.alerts() if a.key == "rule:too_hot")
    engine.acknowledge(hot.id, "farmer", at(60))
    stored = engine.take_changed()
    again = AlertEngine(TIMING, stored)
    again.update("farm-1", "alarms", [FIRE], at(100))
    again.update("farm-1", "rules", [HOT], at(100))
    assert run(again, 200) == []  # neither opened again nor reminded early
    [reminder] = run(again, 630)
    assert [a.key for a in reminder.reminded] == ["alarm:3"]  # the acknowledged one stays quiet


def test_acknowledging_an_unknown_alert_changes_nothing() -> None:
    engine = AlertEngine(TIMING)
    assert engine.acknowledge("nope", "farmer", at(0)) is None
    assert engine.take_changed() == []


# ---- properties ---------------------------------------------------------------------------------------

Op = tuple[str, object, frozenset[str]]
STEP = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(["farm-1", "farm-2"]), st.frozensets(st.sampled_from(["a", "b"]))),
    st.tuples(st.just("ack"), st.integers(0, 5), st.just(frozenset())),
    st.tuples(st.just("fail"), st.sampled_from(["farm-1", "farm-2"]), st.just(frozenset())),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(STEP, st.integers(1, 400)), max_size=40))
def test_lifecycle_invariants_hold_for_any_history(history: list[tuple[Op, int]]) -> None:
    engine = AlertEngine(TIMING)
    now = 0
    held_since: dict[tuple[str, str], int] = {}  # condition → when it began holding, continuously
    last_sent: dict[str, int] = {}
    acked: set[str] = set()
    opened: dict[str, Alert] = {}
    cleared_told: dict[str, int] = {}
    told: set[str] = set()
    for (op, arg, keys), pause in history:
        if op == "set":
            farm = str(arg)
            engine.update(farm, "alarms", [Condition(k, "alarm", Severity.CRITICAL, k) for k in keys], at(now))
            for key in ("a", "b"):
                if key in keys:
                    held_since.setdefault((farm, key), now)
                else:
                    held_since.pop((farm, key), None)
        elif op == "ack" and opened:
            alert = list(opened.values())[int(str(arg)) % len(opened)]
            if engine.acknowledge(alert.id, "someone", at(now)) is not None:
                acked.add(alert.id)
        elif op == "fail":
            engine.tier_failed(str(arg))
        now += pause
        for burst in engine.tick(at(now)):
            for alert in burst.opened:
                # opened only after its condition held, without a break, for the whole delay
                assert now - held_since[burst.farm_id, alert.key] >= TIMING.delay
                assert alert.id not in opened
                opened[alert.id] = alert
                last_sent[alert.id] = now
                told.add(alert.id)
            for alert in burst.reminded:
                assert alert.id not in acked
                assert now - last_sent[alert.id] >= TIMING.remind_interval
                last_sent[alert.id] = now
            for alert in burst.escalated:
                assert alert.id not in acked
            for alert in burst.cleared:
                assert alert.id in told  # an all clear goes only where the alert went
                cleared_told[alert.id] = cleared_told.get(alert.id, 0) + 1
    assert all(count == 1 for count in cleared_told.values())  # one all clear each, never two
    for alert in engine.alerts():  # nothing stays open whose condition has gone
        assert (alert.farm_id, alert.key) in held_since
