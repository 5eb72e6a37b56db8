"""Value rules: limits with hysteresis, limits relative to another value, and rates per hour."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from discovery.alerting.rules import RuleWatch, ValueRule

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def test_above_with_hysteresis_clears_only_past_the_band() -> None:
    watch = RuleWatch(ValueRule(name="hot", value="t", above=30, hysteresis=1))
    assert [watch.check({"t": v}, T0) for v in (29.9, 30.5, 29.5, 29.0, 30.0)] == [False, True, True, False, False]


def test_relative_limits_follow_the_other_value_and_missing_values_give_no_verdict() -> None:
    watch = RuleWatch(ValueRule(name="cold", value="t", relative_to="target", below=-4))
    assert watch.check({"t": 27.5, "target": 32.0}, T0) is True
    assert watch.check({"t": 27.5, "target": None}, T0) is None
    assert watch.check({"t": 27.5, "target": 30.0}, T0) is False
    assert watch.check({}, T0) is None


def test_rate_per_hour_is_measured_over_its_window_not_between_two_close_readings() -> None:
    watch = RuleWatch(ValueRule(name="racing", value="t", rate_per_hour=6, window_s=600))
    assert watch.check({"t": 20.0}, T0) is None
    assert watch.check({"t": 20.5}, T0 + timedelta(seconds=10)) is None  # 180 °C/h over 10 s is noise
    assert watch.check({"t": 21.5}, T0 + timedelta(seconds=600)) is True  # 1.5 °C in 10 min: 9 °C/h
    assert watch.check({"t": 21.5}, T0 + timedelta(seconds=600)) is None  # a repeated reading says nothing
    assert watch.check({"t": 21.6}, T0 + timedelta(seconds=1800)) is False  # steady since


def test_rules_apply_to_their_farms_or_owner() -> None:
    assert ValueRule(name="a", value="t", above=1, farms=("farm-1",)).applies_to("farm-1", None)
    assert not ValueRule(name="a", value="t", above=1, farms=("farm-1",)).applies_to("farm-2", None)
    assert ValueRule(name="a", value="t", above=1, owner="o").applies_to("farm-2", "o")
    assert not ValueRule(name="a", value="t", above=1, owner="o").applies_to("farm-2", "p")
    assert ValueRule(name="a", value="t", above=1).applies_to("farm-2", None)


@given(st.floats(-50, 50), st.floats(0, 10), st.lists(st.floats(-100, 100), min_size=1, max_size=30))
def test_an_above_rule_holds_exactly_as_its_band_says(limit: float, band: float, values: list[float]) -> None:
    watch = RuleWatch(ValueRule(name="r", value="v", above=limit, hysteresis=band))
    holding = False
    for value in values:
        expected = value > limit - band if holding else value > limit
        assert watch.check({"v": value}, T0) is expected
        holding = expected
