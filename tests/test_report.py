"""Report by exception: which polls are worth publishing."""

from __future__ import annotations

from farm_agent.profile import load_profile
from farm_agent.report import named_bits, worth_publishing

PROFILE = load_profile()
OK = {"temp_inside": "ok", "humidity": "ok", "co2": "ok", "ventilation_scheme": "ok"}
BEFORE = {"temp_inside": 21.0, "humidity": 60.0, "co2": 900, "ventilation_scheme": 0}


def publish(values: dict, status: dict | None = None) -> bool:  # type: ignore[type-arg]
    return worth_publishing(PROFILE, BEFORE, OK, {**BEFORE, **values}, {**OK, **(status or {})})


def test_moves_within_deadbands_are_not_worth_publishing() -> None:
    assert not publish({})
    assert not publish({"temp_inside": 21.2, "humidity": 61.0, "co2": 950})  # deadbands 0.2, 1.0, 50


def test_a_move_beyond_a_deadband_a_status_change_or_an_enum_change_is() -> None:
    assert publish({"temp_inside": 21.3})
    assert publish({"co2": 951})
    assert publish({"humidity": None}, {"humidity": "break"})
    assert publish({"ventilation_scheme": 1})
    assert worth_publishing(PROFILE, None, None, BEFORE, OK)


def test_labelled_bits_are_named() -> None:
    assert named_bits(PROFILE, {"digital_outputs_2": 0b1000_0000, "digital_outputs_1": 3}) == {
        "digital_outputs_2": {"alarm_relay": True}
    }
