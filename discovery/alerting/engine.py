"""The lifecycle of alerts, as pure logic: conditions in, alerts and the notifications they call for out.

A condition must hold for ``delay`` before its alert opens (anti-chatter). An open alert is sent to
tier 1 at once, reminded every ``remind_interval`` until someone acknowledges it, and sent to tier 2
too once it has been open ``escalate_after`` without an acknowledgement, or at once when no channel
of tier 1 could deliver it. When its condition clears, everyone who was told gets an all clear.
Acknowledging stops reminders and escalation; it does not clear the alert (only its condition can).

Nothing here reads a clock, a disk or the network: every method takes ``now``, which makes the
engine a function of its inputs (see the property tests).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal

from discovery.alerting.kinds import Severity

AlertState = Literal["open", "acknowledged", "cleared"]


@dataclass(frozen=True)
class Timing:
    delay: float = 30.0
    remind_interval: float = 600.0
    escalate_after: float = 900.0


@dataclass(frozen=True)
class Condition:
    """Something that holds on a farm now. ``key`` is stable for as long as it holds (``alarm:5``)."""

    key: str
    kind: str
    severity: Severity
    subject: str = ""  # the bit's label, the value's name or the rule's name
    value: float | None = None
    limit: str | None = None
    unit: str | None = None
    since: datetime | None = None  # when it began, if known better than "when it was first seen"
    latching: bool = False


@dataclass
class Alert:
    id: str
    farm_id: str
    key: str
    source: str
    kind: str
    severity: Severity
    subject: str
    since: datetime
    opened: datetime
    state: AlertState = "open"
    value: float | None = None
    limit: str | None = None
    unit: str | None = None
    latching: bool = False
    tier: int = 1  # the highest tier told
    notified: datetime | None = None  # last sent (opened or reminded); None: not sent yet
    acknowledged_by: str | None = None
    acknowledged: datetime | None = None
    cleared: datetime | None = None


@dataclass
class Burst:
    """What one farm's recipients are to be told now, grouped so that each gets one message."""

    farm_id: str
    opened: list[Alert] = field(default_factory=list)  # to tier 1
    escalated: list[Alert] = field(default_factory=list)  # to tier 2, for the first time
    reminded: list[Alert] = field(default_factory=list)  # to every tier up to the alert's
    cleared: list[Alert] = field(default_factory=list)  # to everyone told

    def __bool__(self) -> bool:
        return bool(self.opened or self.escalated or self.reminded or self.cleared)


@dataclass
class _Pending:
    condition: Condition
    source: str
    seen: datetime


class AlertEngine:
    def __init__(self, timing: Timing, alerts: Iterable[Alert] = ()) -> None:
        self.timing = timing
        # by farm, then by condition key: an update touches only its own farm's entries
        self._pending: dict[str, dict[str, _Pending]] = defaultdict(dict)
        self._alerts: dict[str, dict[str, Alert]] = defaultdict(dict)  # not cleared yet
        self._by_id: dict[str, Alert] = {}
        self._cleared: list[Alert] = []  # cleared, all clear not sent yet
        self._escalate: set[str] = set()  # farms whose tier 1 could not be reached
        self._dirty: dict[str, Alert] = {}
        for alert in alerts:
            if alert.state != "cleared":
                self._alerts[alert.farm_id][alert.key] = alert
                self._by_id[alert.id] = alert

    # ---- inputs -------------------------------------------------------------------------------------

    def update(self, farm_id: str, source: str, conditions: Iterable[Condition], now: datetime) -> None:
        """What ``source`` says holds on the farm now; what it said before and no longer says has cleared."""
        current = {condition.key: condition for condition in conditions}
        pending, alerts = self._pending[farm_id], self._alerts[farm_id]
        for key, condition in current.items():
            alert = alerts.get(key)
            if alert is not None:
                self._refresh(alert, condition)
            elif condition.latching:
                self._open(farm_id, source, condition, now, now)
            elif key not in pending:
                pending[key] = _Pending(condition, source, now)
            else:
                pending[key].condition = condition
        for key in [k for k, p in pending.items() if p.source == source and k not in current]:
            del pending[key]
        for alert in [a for k, a in alerts.items() if a.source == source and k not in current and not a.latching]:
            self._clear(alert, now)

    def acknowledge(self, alert_id: str, by: str, now: datetime) -> Alert | None:
        """Stop reminders and escalation of an alert; None when there is no such alert not yet cleared.

        A latching alert (an event) has nothing else to clear it: acknowledging it closes it.
        """
        alert = self._by_id.get(alert_id)
        if alert is None:
            return None
        if alert.state == "open":
            alert.state, alert.acknowledged_by, alert.acknowledged = "acknowledged", by, now
            self._dirty[alert.id] = alert
        if alert.latching:
            self._clear(alert, now, tell=False)
        return alert

    def merge(self, stored: Iterable[Alert]) -> set[str]:
        """Take in the alerts as the store has them, written by this node and by the others that share it: an
        alert another node opened first is this one under that alert's id, one opened elsewhere is taken as it is
        (its condition's wait is over), and the state, acknowledgement, tier and last notification only go
        forward, as the store merges them. The farms whose alerts changed."""
        changed: set[str] = set()
        # the rows of alerts held here first: one cleared elsewhere leaves its condition free for the next one
        for row in sorted(stored, key=lambda r: r.id not in self._by_id):
            alert = self._by_id.get(row.id)
            if alert is None:
                if row.state == "cleared":
                    continue
                self._pending[row.farm_id].pop(row.key, None)
                alert = self._alerts[row.farm_id].get(row.key)
                if alert is None:
                    self._alerts[row.farm_id][row.key] = self._by_id[row.id] = replace(row)
                    changed.add(row.farm_id)
                    continue
                del self._by_id[alert.id]
                self._dirty.pop(alert.id, None)
                alert.id, alert.opened, alert.since = row.id, row.opened, row.since
                self._by_id[alert.id] = alert
                self._dirty[alert.id] = alert  # what this node did of it (told, escalated) goes into the row too
                changed.add(row.farm_id)
            if self._fold(alert, row):
                changed.add(row.farm_id)
        return changed

    def _fold(self, alert: Alert, row: Alert) -> bool:
        before = (alert.state, alert.acknowledged_by, alert.tier, alert.notified)
        if row.acknowledged is not None:
            alert.acknowledged_by, alert.acknowledged = row.acknowledged_by, row.acknowledged
            if alert.state == "open":
                alert.state = "acknowledged"
        alert.tier = max(alert.tier, row.tier)
        if row.notified is not None and (alert.notified is None or row.notified > alert.notified):
            alert.notified = row.notified
        if row.state == "cleared":  # a latching alert is cleared by an acknowledgement, which tells no one
            self._clear(alert, row.cleared or row.opened, tell=not alert.latching)
        return (alert.state, alert.acknowledged_by, alert.tier, alert.notified) != before

    def tier_failed(self, farm_id: str) -> None:
        """No channel of tier 1 delivered this farm's message: escalate its open alerts at once."""
        self._escalate.add(farm_id)

    # ---- the clock ----------------------------------------------------------------------------------

    def tick(self, now: datetime, telling: bool = True) -> list[Burst]:
        """Open what waited long enough; what is to be told now. A node that does not tell (another one holds the
        notifications) opens the same alerts, and marks none told, reminded or escalated: the node that tells
        does, and when this one takes over it goes on from what that one wrote (:meth:`merge`)."""
        delay = timedelta(seconds=self.timing.delay)
        for farm_id, pending in self._pending.items():
            for key in [k for k, p in pending.items() if now - p.seen >= delay]:
                held = pending.pop(key)
                self._open(farm_id, held.source, held.condition, held.seen, now)
        if not telling:
            self._cleared = []
            self._escalate.clear()
            return []
        bursts: dict[str, Burst] = {}
        remind = timedelta(seconds=self.timing.remind_interval)
        escalate = timedelta(seconds=self.timing.escalate_after)
        for alert in self._by_id.values():
            if alert.state != "open":
                continue
            if alert.notified is None:
                bursts.setdefault(alert.farm_id, Burst(alert.farm_id)).opened.append(alert)
            elif now - alert.notified >= remind:
                bursts.setdefault(alert.farm_id, Burst(alert.farm_id)).reminded.append(alert)
            if alert.tier == 1 and (now - alert.opened >= escalate or alert.farm_id in self._escalate):
                bursts.setdefault(alert.farm_id, Burst(alert.farm_id)).escalated.append(alert)
        for alert in self._cleared:
            bursts.setdefault(alert.farm_id, Burst(alert.farm_id)).cleared.append(alert)
        self._cleared = []
        self._escalate.clear()
        for burst in bursts.values():
            for alert in burst.opened + burst.reminded:
                alert.notified = now
                self._dirty[alert.id] = alert
            for alert in burst.escalated:
                alert.tier = 2
                self._dirty[alert.id] = alert
        return [burst for burst in bursts.values() if burst]

    # ---- reading ------------------------------------------------------------------------------------

    def alerts(self, farm_id: str | None = None) -> list[Alert]:
        """Alerts not yet cleared, oldest first."""
        found = self._by_id.values() if farm_id is None else self._alerts.get(farm_id, {}).values()
        return sorted(found, key=lambda a: (a.opened, a.id))

    def pending(self, farm_id: str) -> list[Condition]:
        return [p.condition for p in self._pending.get(farm_id, {}).values()]

    def take_changed(self) -> list[Alert]:
        """Alerts changed since the last call, for the store to write (copies: the engine goes on)."""
        changed = [replace(alert) for alert in self._dirty.values()]
        self._dirty.clear()
        return changed

    # ---- internals ----------------------------------------------------------------------------------

    def _open(self, farm_id: str, source: str, condition: Condition, seen: datetime, now: datetime) -> None:
        alert = Alert(
            id=uuid.uuid4().hex[:16], farm_id=farm_id, key=condition.key, source=source, kind=condition.kind,
            severity=condition.severity, subject=condition.subject, since=condition.since or seen, opened=now,
            value=condition.value, limit=condition.limit, unit=condition.unit, latching=condition.latching,
        )
        self._alerts[farm_id][condition.key] = alert
        self._by_id[alert.id] = alert
        self._dirty[alert.id] = alert

    def _refresh(self, alert: Alert, condition: Condition) -> None:
        if (alert.value, alert.subject) != (condition.value, condition.subject):
            alert.value, alert.subject = condition.value, condition.subject
            self._dirty[alert.id] = alert

    def _clear(self, alert: Alert, now: datetime, *, tell: bool = True) -> None:
        del self._alerts[alert.farm_id][alert.key]
        del self._by_id[alert.id]
        alert.state, alert.cleared = "cleared", now
        self._dirty[alert.id] = alert
        if tell and alert.notified is not None:
            self._cleared.append(alert)
