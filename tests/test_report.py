"""Report by exception: which polls are worth publishing."""

from __future__ import annotations

from contract.payloads import Reading, decode, encode, utc_now
from farm_agent.profile import load_profile
from farm_agent.report import make_reading, worth_publishing

PROFILE = load_profile()
OK = {"temp_inside": "ok", "humidity": "ok", "co2": "ok", "ventilation_scheme": "ok"}
BEFORE = {"temp_inside": 21.0, "humidity": 60.0, "co2": 900, "ventilation_scheme": 0}


def publish(values: dict, status: dict | None = None) -> bool:  # type: ignore[type-arg]
    return worth_publishing(PROFILE, BEFORE, OK, {**BEFORE, **values}, {**OK, **(status or {})})


def test_moves_within_deadbands_are_not_worth_publishing() -> None:
    assert not publish({})
    assert not publish({"temp_inside": 21.3, "humidity": 62.0, "co2": 1050})  # deadbands 0.3, 2.0, 150


def test_a_move_beyond_a_deadband_a_status_change_or_an_enum_change_is() -> None:
    assert publish({"temp_inside": 21.4})
    assert publish({"co2": 1051})
    assert publish({"humidity": None}, {"humidity": "break"})
    assert publish({"ventilation_scheme": 1})
    assert worth_publishing(PROFILE, None, None, BEFORE, OK)


def test_a_reading_carries_every_value_and_only_the_statuses_that_are_not_ok() -> None:
    values = {**BEFORE, "humidity": None}
    status = {**OK, "humidity": "break"}
    reading = decode(Reading, encode(make_reading(utc_now(), 7, values, status)))
    assert reading.values == values and reading.status == {"humidity": "break"} and reading.bits is None


def test_a_published_reading_with_its_ok_statuses_left_out_is_not_a_status_change() -> None:
    published = make_reading(utc_now(), 1, BEFORE, OK)
    assert published.status == {}
    assert not worth_publishing(PROFILE, published.values, published.status, BEFORE, OK)
    assert worth_publishing(PROFILE, published.values, published.status, BEFORE, {**OK, "co2": "error"})
