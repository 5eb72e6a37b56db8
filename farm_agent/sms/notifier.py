"""Runs the SMS policy: sends what it decides through the modem, watches the modem, reports what was sent.

A missing or failing modem never stops the agent: it shows in :attr:`SmsNotifier.health` (the
agent's ``/health``, heartbeat and ``kubmesh doctor``), and the notifier keeps trying to reach it. A message
that reached no number is tried again, with the state as it is then, after ``retry_after`` seconds.
What was sent while monitoring was cut off is handed to ``report`` (the agent publishes it as an
``sms_sent`` event) as soon as monitoring hears the farm again, so the discovery node knows what the
farmer has already been told.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from contract.payloads import Clock, Event, SmsStatus, format_ts
from farm_agent.sms.modem import Modem, ModemError
from farm_agent.sms.policy import Outgoing, SmsPolicy
from farm_agent.sms.texts import Notice

log = logging.getLogger("kubmesh.agent.sms")

TICK = 1.0  # seconds between looks at the policy when nothing is observed


@dataclass(frozen=True)
class SentSms:
    ts: datetime
    text: str
    reason: Notice
    recipients: int  # numbers the modem accepted it for
    failed: int  # numbers it could not be sent to
    alarms: tuple[str, ...]
    controller_down: bool

    def event(self) -> Event:
        return Event(ts=self.ts, kind="sms_sent", message=self.text, detail={
            "sent_at": format_ts(self.ts), "reason": self.reason, "recipients": self.recipients,
            "failed": self.failed, "alarms": list(self.alarms), "controller_down": self.controller_down,
        })


Report = Callable[[SentSms], Awaitable[bool]]  # True once the bus has taken it


class SmsNotifier:
    def __init__(
        self,
        policy: SmsPolicy,
        modem: Modem,
        numbers: Sequence[str],
        report: Report,
        *,
        farm_id: str = "?",
        changed: Callable[[], None] = lambda: None,
        check_every: float = 60.0,
        retry_after: float = 30.0,
    ) -> None:
        self.policy = policy
        self.modem = modem
        self.numbers = list(numbers)
        self.report = report
        self.farm_id = farm_id
        self.changed = changed  # the health changed in a way worth telling at once (a heartbeat)
        self.check_every = check_every
        self.retry_after = retry_after
        self.health = SmsStatus(device=modem.device, ok=False)
        self.unreported: list[SentSms] = []
        self._clock: Clock = policy.clock
        self._next_check: datetime | None = None  # None: at once
        self._retry_at: datetime | None = None
        self._wake = asyncio.Event()

    # ---- observations, from the agent -----------------------------------------------------------

    def link(self, up: bool) -> None:
        self.policy.link(up)
        self._wake.set()

    def discovery(self, online: bool | None) -> None:
        self.policy.discovery(online)
        self._wake.set()

    def alarms(self, active: Sequence[str]) -> None:
        self.policy.alarms(active)
        self._wake.set()

    def controller(self, answering: bool) -> None:
        self.policy.controller(answering)
        self._wake.set()

    # ---- running ----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Until cancelled."""
        try:
            while True:
                self._wake.clear()  # before the look, so what is observed during it wakes the next one
                await self.step()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._pause())
        finally:
            await self.modem.close()

    async def step(self) -> None:
        """One look: check the modem when due, send what is due, report what the bus has not heard."""
        now = self._clock()
        before = self._worth_telling()
        if self._next_check is None or now >= self._next_check:
            await self.check_modem()
        if self._retry_at is None or now >= self._retry_at:
            outgoing = self.policy.due()
            if outgoing is not None:
                await self._deliver(outgoing)
        if self.unreported and self.policy.cut_since is None:
            await self._report()
        self.health.held_back = self.policy.held_back
        self.health.cut_off_since = self.policy.cut_since
        if self._worth_telling() != before:
            self.changed()

    async def check_modem(self) -> None:
        self._next_check = self._clock() + timedelta(seconds=self.check_every)
        try:
            status = await self.modem.status()
        except ModemError as exc:
            self._modem_failed(str(exc))
            return
        if not self.health.ok:
            log.info("farm %s: SMS modem %s ready (registered: %s, signal %s%%)", self.farm_id,
                     self.modem.device, status.registered, status.signal_percent)
        self.health.ok = True
        self.health.error = None if status.registered else "not registered on a network"
        self.health.registered = status.registered
        self.health.network = status.network
        self.health.signal_percent = status.signal_percent

    def _worth_telling(self) -> tuple[object, ...]:
        health = self.health
        return health.ok, health.error, health.registered, health.sent, health.failed

    def _pause(self) -> float:
        until_due = self.policy.seconds_until_due()
        return TICK if until_due is None else max(0.05, min(TICK, until_due))

    async def _deliver(self, outgoing: Outgoing) -> None:
        accepted, errors = 0, []
        for number in self.numbers:
            try:
                await self.modem.send(number, outgoing.text)
            except ModemError as exc:
                errors.append(str(exc))
            else:
                accepted += 1
        now = self._clock()
        if not accepted:
            self.health.failed += 1
            self._retry_at = now + timedelta(seconds=self.retry_after)
            self._modem_failed(errors[0] if errors else "no number to text")
            log.error("farm %s: SMS not sent to any number, trying again in %.0f s: %s", self.farm_id,
                      self.retry_after, outgoing.text)
            return
        self._retry_at = None
        self.policy.sent(outgoing)
        self.health.ok, self.health.error = True, None
        self.health.sent += 1
        self.health.last_sms = now
        log.warning("farm %s: SMS sent to %d number(s)%s: %s", self.farm_id, accepted,
                    f", {len(errors)} failed ({errors[0]})" if errors else "", outgoing.text)
        self.unreported.append(SentSms(now, outgoing.text, outgoing.reason, accepted, len(errors),
                                       outgoing.alarms, outgoing.controller_down))

    async def _report(self) -> None:
        while self.unreported:
            if not await self.report(self.unreported[0]):
                return  # the bus did not take it: again on the next look
            self.unreported.pop(0)

    def _modem_failed(self, error: str) -> None:
        if self.health.ok or self.health.error != error:
            log.error("farm %s: SMS modem %s: %s", self.farm_id, self.modem.device, error)
        self.health.ok = False
        self.health.error = error
        self.health.registered = None
        self.health.signal_percent = None
