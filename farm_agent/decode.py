"""Raw register words to published values: scaling, sign, sentinels and alarm bits."""

from __future__ import annotations

from collections.abc import Mapping

from contract.payloads import AlarmItem, SensorStatus
from farm_agent.profile import AlarmGroupSpec, Profile, ValueSpec

Registers = Mapping[int, int]


def decode_value(profile: Profile, spec: ValueSpec, raw: int) -> tuple[int | float | None, SensorStatus]:
    """One register word to ``(value, status)``; a sentinel gives ``(None, its status)``."""
    if spec.sentinels:
        status = profile.sentinel_status(raw)
        if status is not None:
            return None, status
    number = raw - 0x10000 if spec.type == "s16" and raw >= 0x8000 else raw
    if spec.scale == 1.0:
        return number, "ok"
    return round(number * spec.scale, spec.decimals), "ok"


def encode_value(spec: ValueSpec, value: float) -> int:
    """The inverse of :func:`decode_value` for a number: what the device would hold."""
    number = round(value / spec.scale)
    return number & 0xFFFF if spec.type == "s16" else number


def decode_values(
    profile: Profile, registers: Registers, holding: Registers | None = None
) -> tuple[dict[str, int | float | None], dict[str, SensorStatus]]:
    """Values from the input registers read, and the holding ones (a value's ``function`` says which)."""
    values: dict[str, int | float | None] = {}
    status: dict[str, SensorStatus] = {}
    for spec in profile.values:
        raw = (holding or {}).get(spec.address) if spec.function == "holding" else registers.get(spec.address)
        if raw is None:
            continue
        values[spec.name], status[spec.name] = decode_value(profile, spec, raw)
    return values, status


def group_bits(group: AlarmGroupSpec, registers: Registers) -> int | None:
    """The 64-bit word of an alarm group, lowest address holding the lowest 16 bits."""
    bits = 0
    for index, address in enumerate(group.registers):
        word = registers.get(address)
        if word is None:
            return None
        bits |= word << (16 * index)
    return bits


def decode_group(group: AlarmGroupSpec, registers: Registers) -> list[AlarmItem]:
    bits = group_bits(group, registers)
    if bits is None:
        return []
    return [alarm_item(group, bit) for bit in range(64) if bits >> bit & 1]


def alarm_item(group: AlarmGroupSpec, bit: int) -> AlarmItem:
    """A raised bit: its labels in both languages when the profile names it; an unnamed bit only has its
    number (``label`` keeps the English text for older consumers, never to be parsed back)."""
    named = group.labels.get(bit)
    return AlarmItem(bit=bit, label=group.label(bit), labels=named.published() if named else None)


def decode_alarms(profile: Profile, registers: Registers) -> dict[str, list[AlarmItem]]:
    """Alarm groups sorted into the four lists of the ``alarms`` payload."""
    lists: dict[str, list[AlarmItem]] = {"active": [], "latched": [], "warnings": [], "latched_warnings": []}
    for group in profile.alarm_groups:
        key = {
            ("alarm", False): "active",
            ("alarm", True): "latched",
            ("warning", False): "warnings",
            ("warning", True): "latched_warnings",
        }[(group.kind, group.latched)]
        lists[key].extend(decode_group(group, registers))
    return lists


def decode_firmware(raw: int, scale: float) -> str:
    """401 with scale 0.01 reads as "4.01"."""
    decimals = len(f"{scale:.6f}".rstrip("0").split(".")[1]) if scale < 1 else 0
    return f"{raw * scale:.{decimals}f}"
