"""From one farm's typed messages to the conditions that hold on it, grouped by the source that says so.

Each source speaks for its own conditions only (the alarms message for alarm and warning bits, the
heartbeat for the controller link, …), so a message that has not arrived yet after a restart clears
nothing. Readings replayed from a farm's backlog are old: they count as heard, never as conditions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pydantic import BaseModel

from contract.messages import FarmMessage
from contract.payloads import Alarms, Event, Heartbeat, Meta, Reading, Status
from contract.topics import FarmTopic
from discovery.alerting.engine import Condition
from discovery.alerting.kinds import Kind
from discovery.alerting.rules import RuleBook, RuleWatch

PRESENCE, ALARMS, CONTROLLER, SENSORS, RULES, EVENTS = "presence", "alarms", "controller", "sensors", "rules", "events"
FAULTY = ("break", "error")
Update = tuple[str, list[Condition]]


@dataclass
class FarmWatch:
    """What the alerting knows of one farm."""

    farm_id: str
    book: RuleBook
    name: str | None = None
    declared_owner: str | None = None
    owner: str | None = None  # whose farm it is (the identity store's say, looked up off the loop by the service)
    last_heard: datetime | None = None
    offline: Status | None = None
    silent: bool = False  # what the engine was last told of its presence
    _rules: dict[str, RuleWatch] = field(default_factory=dict)

    def on_message(self, message: FarmMessage[BaseModel], now: datetime, silent_after: float) -> list[Update]:
        payload = message.payload
        if payload is None or message.kind is FarmTopic.SET:  # a retained message cleared, or a command to it
            return []
        self._heard(payload, message.retained, now)
        updates: list[Update] = []
        if isinstance(payload, Status):
            self.offline = payload if payload.state == "offline" else None
        elif isinstance(payload, Meta):
            self.name, self.declared_owner = payload.name, payload.owner_id
            self.owner = self.owner or payload.owner_id  # until the identity store is asked
        elif isinstance(payload, Alarms):
            updates.append((ALARMS, self._alarm_conditions(payload)))
        elif isinstance(payload, Heartbeat):
            updates.append((CONTROLLER, self._controller(payload.modbus == "error")))
        elif isinstance(payload, Event):
            updates.extend(self._event(payload))
        elif isinstance(payload, Reading) and message.kind is FarmTopic.STATE and _fresh(payload, now, silent_after):
            updates.append((SENSORS, self._sensor_conditions(payload)))
            updates.append((RULES, self._rule_conditions(payload)))
        presence = self.presence(now, silent_after)
        self.silent = bool(presence)
        updates.append((PRESENCE, presence))
        return updates

    def presence(self, now: datetime, silent_after: float) -> list[Condition]:
        """``farm_silent`` while its last will says offline or nothing has been heard for ``silent_after``."""
        kind = self._kind("farm_silent")
        if self.offline is not None:
            return [Condition("farm_silent", "farm_silent", kind.severity, "offline", since=self.offline.ts)]
        if self.last_heard is not None and now - self.last_heard > timedelta(seconds=silent_after):
            return [Condition("farm_silent", "farm_silent", kind.severity, "silent", since=self.last_heard)]
        return []

    def _heard(self, payload: BaseModel, retained: bool, now: datetime) -> None:
        # a retained message was said when its ts says, not now (it may be hours old after a restart)
        heard = now
        if retained:
            ts = getattr(payload, "ts", None)
            heard = min(ts, now) if isinstance(ts, datetime) else now
        if self.last_heard is None or heard > self.last_heard:
            self.last_heard = heard

    def _kind(self, name: str) -> Kind:
        return self.book.kinds[name]

    def _alarm_conditions(self, alarms: Alarms) -> list[Condition]:
        # an alarm is over when its bit leaves the active group; the latched copy does not hold it open
        alarm, warning = self._kind("alarm"), self._kind("warning")
        return [
            *(Condition(f"alarm:{item.bit}", "alarm", alarm.severity, item.label) for item in alarms.active),
            *(Condition(f"warning:{item.bit}", "warning", warning.severity, item.label) for item in alarms.warnings),
        ]

    def _controller(self, failing: bool) -> list[Condition]:
        kind = self._kind("controller_unreachable")
        return [Condition("controller_unreachable", "controller_unreachable", kind.severity)] if failing else []

    def _event(self, event: Event) -> list[Update]:
        if event.kind == "modbus_error":
            return [(CONTROLLER, self._controller(True))]
        if event.kind == "modbus_restored":
            return [(CONTROLLER, [])]
        if event.kind == "backlog_dropped":
            kind = self._kind("backlog_dropped")
            dropped = event.detail.get("dropped")
            value = float(dropped) if isinstance(dropped, int | float) and not isinstance(dropped, bool) else None
            return [(EVENTS, [Condition("backlog_dropped", "backlog_dropped", kind.severity, value=value,
                                        since=event.ts, latching=kind.latching)])]
        return []

    def _sensor_conditions(self, reading: Reading) -> list[Condition]:
        kind = self._kind("sensor_fault")
        return [
            Condition(f"sensor_fault:{name}", "sensor_fault", kind.severity, name, limit=status)
            for name, status in sorted(reading.status.items())
            if status in FAULTY
        ]

    def _rule_conditions(self, reading: Reading) -> list[Condition]:
        owner = self.owner
        conditions = []
        for rule in self.book.rules:
            if not rule.applies_to(self.farm_id, owner):
                continue
            watch = self._rules.setdefault(rule.name, RuleWatch(rule))
            verdict = watch.check(reading.values, reading.ts)
            if verdict is None:
                verdict = watch.holding  # no verdict from this reading: what held still holds
            if verdict:
                raw = reading.values.get(rule.value)
                value = watch.rate() if rule.rate_per_hour is not None else raw
                conditions.append(Condition(f"rule:{rule.name}", "value_rule", rule.severity, rule.name,
                                            value=None if value is None else round(float(value), 3),
                                            limit=rule.limit_text(), unit=_unit(rule.unit, rate=rule.rate_per_hour)))
        return conditions


def _unit(unit: str | None, *, rate: float | None) -> str | None:
    return f"{unit or ''}/h" if rate is not None else unit


def _fresh(reading: Reading, now: datetime, silent_after: float) -> bool:
    """A reading older than the silence limit (a retained one after a restart) is stale: it never looks live."""
    return (now - reading.ts).total_seconds() <= silent_after
