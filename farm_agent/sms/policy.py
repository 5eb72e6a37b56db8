"""When the farm texts, and what: pure logic over what the agent observes and an injectable clock.

Monitoring is *cut off* while the agent cannot reach the broker, or while the discovery node's
retained status (its last will) says ``offline``. Once that has lasted ``after`` seconds an
*outage* opens, and the farm tells its numbers what the discovery node would have told them:

- once per outage, why it texts: ``cut_off`` (the farm's own link is down) or ``monitoring_down``
  (the link works but the discovery node is dead: who watches the watcher);
- the controller's active alarms, by label, and the controller not answering;
- afterwards, only what changed since the last SMS: alarms raised or cleared, the controller lost
  or back. Changes gather for ``group_window`` seconds into one message, so a burst is one SMS.

At most ``max_per_hour`` messages leave in any hour (across outages). What the limit holds back is
not lost: the next message allowed tells the state as it is then. When the outage ends the
discovery node's own alerting takes over; what was sent is reported on the bus by the caller
(:class:`farm_agent.sms.notifier.SmsNotifier`), so no story is told twice.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from contract.payloads import Clock, utc_now
from farm_agent.sms.texts import Language, Notice, Story, compose

HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class Outgoing:
    """One SMS to send to every number, and what it tells (for the ``sms_sent`` report)."""

    text: str
    story: Story
    reason: Notice  # why monitoring is cut off now
    alarms: tuple[str, ...]  # every alarm the farmer will believe active once this is read
    controller_down: bool


@dataclass
class _Told:
    """What the farmer was told in this outage: the state their phone shows."""

    notice: bool = False
    alarms: tuple[str, ...] = ()
    controller_down: bool = False


@dataclass
class SmsPolicy:
    farm_name: str
    after: float = 300.0
    max_per_hour: int = 6
    language: Language = "ru"
    group_window: float = 20.0
    clock: Clock = utc_now
    _link_up: bool = False
    _discovery_offline: bool = False
    _alarms: tuple[str, ...] = ()
    _controller_down: bool = False
    _cut_since: datetime | None = None
    _changed_since: datetime | None = None  # since when the state differs from what was told
    _told: _Told = field(default_factory=_Told)
    _sent: deque[datetime] = field(default_factory=deque)  # when each SMS of the last hour left

    def __post_init__(self) -> None:
        self._cut_since = self.clock()  # an agent starts without a link until its first connect

    # ---- what the agent observes -------------------------------------------------------------

    def link(self, up: bool) -> None:
        self._link_up = up
        self._update_cut()

    def discovery(self, online: bool | None) -> None:
        """The discovery node's retained status: True online, False offline, None unknown (never heard, or cleared)."""
        self._discovery_offline = online is False
        self._update_cut()

    def alarms(self, active: Sequence[str]) -> None:
        self._alarms = tuple(dict.fromkeys(active))  # in the controller's order, once each
        self._update_changed()

    def controller(self, answering: bool) -> None:
        self._controller_down = not answering
        self._update_changed()

    # ---- what it decides -----------------------------------------------------------------------

    @property
    def cut_since(self) -> datetime | None:
        return self._cut_since

    @property
    def outage(self) -> bool:
        """Cut off for longer than ``after``: the farm texts."""
        return self._cut_since is not None and self.clock() - self._cut_since >= timedelta(seconds=self.after)

    @property
    def reason(self) -> Notice:
        return "cut_off" if not self._link_up else "monitoring_down"

    @property
    def held_back(self) -> bool:
        """Something is waiting for the hourly limit."""
        return self.outage and self._pending() and not self._allowed()

    def due(self) -> Outgoing | None:
        """The message to send now, if any; call :meth:`sent` once it has left."""
        if not self.outage or not self._pending():
            return None
        now = self.clock()
        first = not self._told.notice
        if not first and self._changed_since is not None \
                and now - self._changed_since < timedelta(seconds=self.group_window):
            return None  # a burst is still coming in
        if not self._allowed():
            return None
        told = self._told
        assert self._cut_since is not None
        story = Story(
            farm_name=self.farm_name,
            notice=self.reason if first else None,
            minutes=max(1, round((now - self._cut_since).total_seconds() / 60)),
            raised=[label for label in self._alarms if label not in told.alarms],
            cleared=[label for label in told.alarms if label not in self._alarms],
            controller=("down" if self._controller_down else "up")
            if self._controller_down != told.controller_down else None,
            no_alarms=first and not self._alarms,
        )
        return Outgoing(compose(story, self.language), story, self.reason, self._alarms, self._controller_down)

    def sent(self, outgoing: Outgoing) -> None:
        self._sent.append(self.clock())
        self._told = _Told(notice=True, alarms=outgoing.alarms, controller_down=outgoing.controller_down)
        self._changed_since = None
        self._update_changed()

    def seconds_until_due(self) -> float | None:
        """When :meth:`due` may next answer, if nothing else is observed; None: not before an observation."""
        if self._cut_since is None or not self._pending():
            return None
        now = self.clock()
        moments = [self._cut_since + timedelta(seconds=self.after)]
        if self._told.notice and self._changed_since is not None:
            moments.append(self._changed_since + timedelta(seconds=self.group_window))
        self._forget_old(now)
        if len(self._sent) >= self.max_per_hour:
            moments.append(self._sent[0] + HOUR)
        return max(0.0, (max(moments) - now).total_seconds())

    # ---- inside ---------------------------------------------------------------------------------

    def _update_cut(self) -> None:
        cut = not self._link_up or self._discovery_offline
        if cut == (self._cut_since is not None):
            return
        # a cut begins or ends: either way the next outage starts its story afresh
        self._cut_since = self.clock() if cut else None
        self._told = _Told()
        self._changed_since = None
        self._update_changed()

    def _update_changed(self) -> None:
        if not self._differs():
            self._changed_since = None
        elif self._changed_since is None:
            self._changed_since = self.clock()

    def _differs(self) -> bool:
        return set(self._alarms) != set(self._told.alarms) or self._controller_down != self._told.controller_down

    def _pending(self) -> bool:
        return not self._told.notice or self._differs()

    def _allowed(self) -> bool:
        self._forget_old(self.clock())
        return len(self._sent) < self.max_per_hour

    def _forget_old(self, now: datetime) -> None:
        while self._sent and now - self._sent[0] >= HOUR:
            self._sent.popleft()
