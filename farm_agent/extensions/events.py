"""``events``: what happened on the farm, found by comparing one poll with the one before, and the agent's own news.

Kinds: ``agent_online``, ``agent_stopping``, ``alarm_raised``/``alarm_cleared``,
``warning_raised``/``warning_cleared``, ``sensor_status``, ``modbus_error``/``modbus_restored``,
``storage_error``/``storage_restored`` and ``backlog_dropped``. Events are not retained: one sent
while the broker is away is gone, except ``backlog_dropped``, told once the broker listens.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime

from contract.payloads import AlarmItem, Event, SensorStatus, encode
from farm_agent.agent import AGENT_VERSION, FarmAgent, alarm_lists
from farm_agent.extension import Extension, HealthChange, Polled

ALARM_LISTS = {
    "active": ("alarm", "Alarm"),
    "warnings": ("warning", "Warning"),
}


class Events(Extension):
    name = "events"

    def __init__(self, agent: FarmAgent) -> None:
        super().__init__(agent)
        self._reporting_drops = asyncio.Lock()  # one report at a time, so no drop is told twice

    async def on_connected(self) -> None:
        await self.agent.publish_event(Event(ts=self.agent.clock(), kind="agent_online",
                                             message=f"agent {AGENT_VERSION} connected"))
        await self._report_drops()

    async def on_poll(self, poll: Polled) -> None:
        events = sensor_events(poll.previous.status if poll.previous else None, poll.status, poll.ts)
        if poll.alarms_before is None or alarm_lists(poll.alarms_before) != alarm_lists(poll.alarms):
            events += alarm_events(alarm_lists(poll.alarms_before) if poll.alarms_before else None,
                                   alarm_lists(poll.alarms), poll.ts)
        for event in events:
            self.agent.publisher.soon(self.agent.publish_event(event))

    async def on_health(self, change: HealthChange) -> None:
        if change.ok and not change.recovered:
            return
        kind = f"{change.part}_{'restored' if change.ok else 'error'}"
        detail: dict[str, object] = {}
        if not change.ok:
            detail["error"] = change.kind if change.part == "modbus" else change.message
        self.agent.publisher.soon(self.agent.publish_event(
            Event(ts=self.agent.clock(), kind=kind, message=change.message, detail=detail)))

    async def on_dropped(self) -> None:
        self.agent.publisher.soon(self._report_drops())

    async def on_stopping(self) -> None:
        await self.agent.publish_event(Event(ts=self.agent.clock(), kind="agent_stopping", message="agent stopping"))

    async def _report_drops(self) -> None:
        """Readings the queue's bounds pushed out are told about, once, as soon as the broker listens."""
        queue = self.agent.queue
        async with self._reporting_drops:
            count = queue.unreported_drops()
            if count <= 0:
                return
            event = Event(ts=self.agent.clock(), kind="backlog_dropped",
                          message=f"backlog full: the {count} oldest unsent reading(s) were dropped",
                          detail={"dropped": count, "dropped_total": queue.dropped})
            if await self.agent.publisher.publish(self.agent.topics.events(self.agent.farm_id), encode(event)):
                queue.drops_reported(count)


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
