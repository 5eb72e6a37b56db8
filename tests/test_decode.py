"""Decoding raw KUB-1063 registers: scaling, sign, sentinels, alarm bits (property tests over the profile)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from farm_agent.blocks import MAX_READ, Block, plan_blocks
from farm_agent.decode import decode_alarms, decode_firmware, decode_value, decode_values, encode_value
from farm_agent.profile import load_profile

PROFILE = load_profile()
SENTINELS = {0xFFFF: "pending", 0xFFFE: "break", 0xFFFD: "error", 0xFFFC: "disabled", 0x7FFF: "pending"}
words = st.integers(min_value=0, max_value=0xFFFF)
specs = st.sampled_from(PROFILE.values)


def expected_sentinel(raw: int) -> str | None:
    if raw in SENTINELS:
        return SENTINELS[raw]
    return "error" if 0xFFF0 <= raw <= 0xFFFB else None


@given(specs, words)
def test_a_sentinel_is_never_a_number(spec, raw: int) -> None:  # type: ignore[no-untyped-def]
    value, status = decode_value(PROFILE, spec, raw)
    sentinel = expected_sentinel(raw)
    if spec.sentinels and sentinel:
        assert (value, status) == (None, sentinel)
    else:
        assert status == "ok" and isinstance(value, int | float)


@given(specs, words)
def test_encode_inverts_decode(spec, raw: int) -> None:  # type: ignore[no-untyped-def]
    value, status = decode_value(PROFILE, spec, raw)
    if status == "ok":
        assert encode_value(spec, value) & 0xFFFF == raw


@pytest.mark.parametrize(("raw", "celsius"), [(0xFF38, -20.0), (0xFFEF, -1.7), (0x0000, 0.0), (0x00E7, 23.1),
                                               (0x7FFE, 3276.6), (0x8000, -3276.8)])
def test_signed_temperatures_are_exact(raw: int, celsius: float) -> None:
    assert decode_value(PROFILE, PROFILE.values_by_name["temp_inside"], raw) == (celsius, "ok")


def test_scaled_values() -> None:
    values, status = decode_values(PROFILE, {0x0084: 612, 0x0085: 900, 0x0086: 135, 0x0083: 0xFFFE})
    assert values == {"humidity": 61.2, "co2": 900, "nh3": 13.5, "pressure": None}
    assert status["pressure"] == "break"


@given(st.lists(st.integers(min_value=0, max_value=63), unique=True, max_size=64))
def test_alarm_groups_are_64_bit_lowest_address_lowest_bits(bits: list[int]) -> None:
    word = sum(1 << bit for bit in bits)
    registers = {0x00C0 + i: word >> (16 * i) & 0xFFFF for i in range(4)}
    registers |= {address: 0 for address in range(0x00C4, 0x00D0)}
    alarms = decode_alarms(PROFILE, registers)
    assert [item.bit for item in alarms["active"]] == sorted(bits)
    assert all(item.label == f"alarm bit {item.bit}" for item in alarms["active"])
    assert alarms["latched"] == alarms["warnings"] == alarms["latched_warnings"] == []


def test_firmware_401_reads_4_01() -> None:
    assert decode_firmware(401, 0.01) == "4.01"


def test_the_whole_live_state_is_one_block() -> None:
    assert plan_blocks(PROFILE.input_registers()) == [Block(0x0081, 86)]


@given(st.sets(st.integers(min_value=0, max_value=2000), min_size=1, max_size=300),
       st.integers(min_value=0, max_value=MAX_READ))
def test_plans_cover_every_address_within_the_protocol_limit(addresses: set[int], gap: int) -> None:
    blocks = plan_blocks(addresses, max_gap=gap)
    covered = {a for b in blocks for a in range(b.start, b.end)}
    assert addresses <= covered
    assert all(1 <= b.count <= MAX_READ for b in blocks)
    assert all(b.start in addresses and b.end - 1 in addresses for b in blocks)
