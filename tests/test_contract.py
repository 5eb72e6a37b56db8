"""The wire contract: topic builders and payload models every component shares."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contract.payloads import (
    Ack,
    AlarmItem,
    Alarms,
    DeviceInfo,
    Event,
    Heartbeat,
    Meta,
    PayloadError,
    ProfileSummary,
    Reading,
    Status,
    decode,
    decode_set_command,
    encode,
    format_ts,
    parse_ts,
)
from contract.topics import FarmTopic, InvalidTopic, Topics, check_farm_id, filter_within

TOPICS = Topics()
farm_ids = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,63}", fullmatch=True)
NOW = datetime(2026, 11, 24, 21, 5, 0, 123456, tzinfo=UTC)


@given(farm_ids, st.sampled_from([k for k in FarmTopic if k is not FarmTopic.SET]))
def test_farm_topics_round_trip(farm_id: str, kind: FarmTopic) -> None:
    parsed = TOPICS.parse(TOPICS.farm(farm_id, kind))
    assert (parsed.farm_id, parsed.kind, parsed.name) == (farm_id, kind, None)


def test_set_topics_carry_the_value_name() -> None:
    assert TOPICS.set("farm-001", "reset_alarms") == "kub/farms/farm-001/set/reset_alarms"
    parsed = TOPICS.parse("kub/farms/farm-001/set/reset_alarms")
    assert (parsed.kind, parsed.name) == (FarmTopic.SET, "reset_alarms")
    assert Topics("farm").state("f1") == "farm/farms/f1/state"


@pytest.mark.parametrize("bad", ["", "+", "#", "a/b", "Farm", "-farm", "a" * 65, "ферма", "farm 1", "../x"])
def test_invalid_farm_ids_are_refused(bad: str) -> None:
    with pytest.raises(InvalidTopic):
        check_farm_id(bad)
    with pytest.raises(InvalidTopic):
        TOPICS.state(bad)


@pytest.mark.parametrize("topic", ["kub/farms/a", "kub/farms/a/nope", "kub/farms/a/state/x", "other/farms/a/state",
                                   "kub/farms/a/set", "kub/farms/a/set/a/b", "kub/farms/A/state"])
def test_parse_refuses_what_the_contract_does_not_have(topic: str) -> None:
    with pytest.raises(InvalidTopic):
        TOPICS.parse(topic)


@pytest.mark.parametrize(
    ("topic_filter", "pattern", "inside"),
    [
        ("kub/farms/a/state", "kub/farms/a/#", True),
        ("kub/farms/a/#", "kub/farms/a/#", True),
        ("kub/farms/a", "kub/farms/a/#", True),
        ("kub/farms/+/state", "kub/farms/a/#", False),
        ("kub/#", "kub/farms/+/set/+", False),
        ("#", "kub/#", False),
        ("kub/farms/a/set/x", "kub/farms/+/set/+", True),
        ("kub/farms/a/set/x/y", "kub/farms/+/set/+", False),
    ],
)
def test_filter_within(topic_filter: str, pattern: str, inside: bool) -> None:
    assert filter_within(topic_filter, pattern) is inside


def test_timestamps_are_iso_utc_with_milliseconds() -> None:
    assert format_ts(NOW) == "2026-11-24T21:05:00.123Z"
    assert json.loads(encode(Status(state="online", ts=NOW)))["ts"] == "2026-11-24T21:05:00.123Z"


@given(st.datetimes(timezones=st.just(UTC)))
def test_every_timestamp_written_reads_back(moment: datetime) -> None:
    assert parse_ts(format_ts(moment)) == moment.replace(microsecond=moment.microsecond // 1000 * 1000)


@pytest.mark.parametrize(
    "model",
    [
        Status(state="offline", ts=NOW, reason="connection lost"),
        Heartbeat(ts=NOW, uptime_s=5.5, polls_ok=3, polls_failed=1, modbus="error", backlog=2),
        Reading(ts=NOW, seq=9, values={"temp_inside": -20.0, "humidity": None, "co2": 900},
                status={"temp_inside": "ok", "humidity": "break", "co2": "ok"}),
        Alarms(ts=NOW, active=[AlarmItem(bit=3, label="alarm bit 3")]),
        Event(ts=NOW, kind="alarm_raised", message="Alarm raised", detail={"bit": 3}),
        Ack(id="x", name="reset_alarms", value=1, ok=False, error="read-only", ts=NOW),
        Meta(farm_id="farm-001", name="Птичник", device=DeviceInfo(model="KUB-1063", firmware="4.01"),
             agent_version="1", poll_interval_s=5, profile=ProfileSummary(name="KUB-1063", values=["co2"]), ts=NOW),
    ],
)
def test_every_payload_round_trips(model: object) -> None:
    again = decode(type(model), encode(model))  # type: ignore[arg-type]
    assert encode(again) == encode(model)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "payload",
    [b"", b"{", b"[]", b'{"state": "sideways", "ts": "2026-01-01T00:00:00Z"}', b'{"state": "online"}',
     b'{"state": "online", "ts": "yesterday"}', b"\xff\xfe", b"null", b"x" * 300_000],
)
def test_bad_status_payloads_raise_a_readable_payload_error(payload: bytes) -> None:
    with pytest.raises(PayloadError) as error:
        decode(Status, payload)
    assert str(error.value)


def test_readings_refuse_non_finite_values() -> None:
    with pytest.raises(PayloadError):
        decode(Reading, b'{"ts": "2026-01-01T00:00:00Z", "seq": 1, "values": {"t": NaN}}')
    with pytest.raises(PayloadError):
        decode(Reading, b'{"ts": "2026-01-01T00:00:00Z", "seq": -1, "values": {}}')
    with pytest.raises(PayloadError):  # a seq the history's SQLite INTEGER cannot hold
        decode(Reading, b'{"ts": "2026-01-01T00:00:00Z", "seq": 9223372036854775808, "values": {}}')
    assert decode(Reading, b'{"ts": "2026-01-01T00:00:00Z", "seq": 9223372036854775807, "values": {}}').seq


@pytest.mark.parametrize(("payload", "value"), [(b"1", 1), (b"21.5", 21.5), (b'{"value": -5, "id": "x"}', -5)])
def test_set_commands_accept_plain_values_and_objects(payload: bytes, value: float) -> None:
    command = decode_set_command(payload)
    assert command.value == value and command.id
    if b'"id"' in payload:
        assert command.id == "x"


@pytest.mark.parametrize("payload", [b'{"value": [[[', b'"abc"', b"null", b"{}", b'{"value": "1"}', b"[1]",
                                     b'{"value": 1, "id": ""}', b"NaN"])
def test_malformed_set_commands_are_refused(payload: bytes) -> None:
    with pytest.raises(PayloadError):
        decode_set_command(payload)
