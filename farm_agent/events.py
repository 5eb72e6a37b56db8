"""Events worth telling people about, found by comparing one poll with the one before."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from contract.payloads import AlarmItem, Event, SensorStatus

ALARM_LISTS = {
    "active": ("alarm", "Alarm"),
    "warnings": ("warning", "Warning"),
}


def alarm_events(
    before: Mapping[str, list[AlarmItem]] | None, after: Mapping[str, list[AlarmItem]], ts: datetime
) -> list[Event]:
    """``alarm_raised``/``alarm_cleared`` and ``warning_raised``/``warning_cleared`` per changed bit."""
    events: list[Event] = []
    for key, (kind, title) in ALARM_LISTS.items():
        old = {item.bit: item for item in (before or {}).get(key, [])}
        new = {item.bit: item for item in after.get(key, [])}
        for bit in sorted(new.keys() - old.keys()):
            events.append(
                Event(ts=ts, kind=f"{kind}_raised", message=f"{title} raised: {new[bit].label}",
                      detail={"bit": bit, "label": new[bit].label})
            )
        for bit in sorted(old.keys() - new.keys()):
            events.append(
                Event(ts=ts, kind=f"{kind}_cleared", message=f"{title} cleared: {old[bit].label}",
                      detail={"bit": bit, "label": old[bit].label})
            )
    return events


def sensor_events(
    before: Mapping[str, SensorStatus] | None, after: Mapping[str, SensorStatus], ts: datetime
) -> list[Event]:
    """``sensor_status`` when a value's status changes (ok → break, break → ok, …)."""
    if before is None:
        before = {name: "ok" for name in after}
    return [
        Event(
            ts=ts,
            kind="sensor_status",
            message=f"{name}: {before.get(name, 'ok')} → {status}",
            detail={"name": name, "from": before.get(name, "ok"), "to": status},
        )
        for name, status in after.items()
        if status != before.get(name, "ok")
    ]
