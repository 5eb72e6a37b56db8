"""Report by exception: a reading is worth publishing when something moved by more than its deadband."""

from __future__ import annotations

from collections.abc import Mapping

from contract.payloads import SensorStatus
from farm_agent.profile import Profile

Values = Mapping[str, int | float | None]


def worth_publishing(
    profile: Profile,
    last_values: Values | None,
    last_status: Mapping[str, SensorStatus] | None,
    values: Values,
    status: Mapping[str, SensorStatus],
) -> bool:
    """True when a status changed, a value appeared or vanished, or moved by more than its deadband."""
    if last_values is None or last_status is None or dict(status) != dict(last_status):
        return True
    for name, value in values.items():
        before = last_values.get(name)
        if (value is None) != (before is None):
            return True
        if value is None or before is None:
            continue
        spec = profile.values_by_name.get(name)
        deadband = spec.deadband if spec and spec.type in ("u16", "s16") else 0.0
        if abs(value - before) > deadband + 1e-9:
            return True
    return False


def named_bits(profile: Profile, values: Values) -> dict[str, dict[str, bool]]:
    """The labelled bits of bitfield values: ``{"digital_outputs_2": {"alarm_relay": true}}``."""
    decoded: dict[str, dict[str, bool]] = {}
    for spec in profile.values:
        raw = values.get(spec.name)
        if spec.bits and isinstance(raw, int):
            decoded[spec.name] = {label: bool(raw >> bit & 1) for bit, label in sorted(spec.bits.items())}
    return decoded
