"""Report by exception: a reading is worth publishing when something moved by more than its deadband.

A reading carries every value (``state`` is retained: a consumer that arrives reads the whole house
from it) but only the statuses that are not ``ok`` — on a house where every sensor works, which is
nearly always, that is a third of the payload, and a value not listed is ``ok`` for every consumer —
and no labelled bits: a bitfield's value is in ``values``, its bit labels in ``meta``'s profile.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from contract.payloads import Reading, SensorStatus
from farm_agent.profile import Profile

Values = Mapping[str, int | float | None]


def reported_status(status: Mapping[str, SensorStatus]) -> dict[str, SensorStatus]:
    """The statuses a reading carries: those that are not ``ok``."""
    return {name: value for name, value in status.items() if value != "ok"}


def make_reading(ts: datetime, seq: int, values: Values, status: Mapping[str, SensorStatus]) -> Reading:
    return Reading(ts=ts, seq=seq, values=dict(values), status=reported_status(status))


def worth_publishing(
    profile: Profile,
    last_values: Values | None,
    last_status: Mapping[str, SensorStatus] | None,
    values: Values,
    status: Mapping[str, SensorStatus],
) -> bool:
    """True when a status changed, a value appeared or vanished, or moved by more than its deadband."""
    if last_values is None or last_status is None or reported_status(status) != reported_status(last_status):
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
