"""A burst of one farm turned into one message per user and channel, sent, and every step recorded.

Tier 1 hears of new alerts and reminders; tier 2 hears of escalated alerts, then their reminders; an
all clear goes to each user a message about the alert was delivered to. When a burst had something for
tier 1 and no channel of tier 1 delivered it (or tier 1 has no one), the engine is told to escalate now.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from common.identities import IdentityStore, StoreError
from contract.payloads import Clock
from discovery.alerting.channels import Channels, display
from discovery.alerting.compose import Message, compose
from discovery.alerting.engine import Alert, Burst
from discovery.alerting.recipients import Contact, Directory, in_quiet_hours, loud, wanted
from discovery.alerting.rules import RuleBook
from discovery.alerting.store import AlertStore, Channel, Step, StoreThread

log = logging.getLogger("kubmesh.discovery.alerting")


@dataclass(frozen=True)
class FarmInfo:
    farm_id: str
    name: str | None
    declared_owner: str | None


@dataclass(frozen=True)
class _Outcome:
    attempted: int = 0
    delivered: int = 0
    deferred: int = 0


class Dispatcher:
    def __init__(self, store: StoreThread, channels: Channels, identities: IdentityStore, book: RuleBook,
                 clock: Clock, link: Callable[[str], str | None], on_tier_failed: Callable[[str], None]) -> None:
        self.store = store
        self.channels = channels
        self.identities = identities
        self.book = book
        self.clock = clock
        self.link = link
        self.on_tier_failed = on_tier_failed
        self._steps: list[Step] = []  # recorded, not yet written: one transaction a round, not one a delivery
        self._results: list[tuple[str, str, bool, str | None, datetime]] = []
        self.delivered = Counter[str]()  # deliveries by result ("ok", "failed"), for /metrics
        self.channel_ok: dict[tuple[str, str], bool] = {}  # (user, shown URL): did its last delivery go through

    async def dispatch(self, bursts: list[tuple[Burst, FarmInfo]]) -> list[asyncio.Task[None]]:
        """Look up who is told (one read for the whole round), then start each farm's sends."""
        farms = [farm for _, farm in bursts]
        cleared = [alert.id for burst, _ in bursts for alert in burst.cleared]
        directory, owners, told = await self.store.call(self._flush_and_look_up, farms, cleared)
        return [asyncio.create_task(self._tell(burst, farm, directory, owners[farm.farm_id], told))
                for burst, farm in bursts]

    async def flush(self) -> None:
        """Write the steps and channel results recorded since the last time."""
        if self._steps or self._results:
            await self.store.call(self._flush)

    async def _tell(self, burst: Burst, farm: FarmInfo, directory: Directory, owner: str | None,
                    told: dict[str, set[str]]) -> None:
        escalated = {alert.id for alert in burst.escalated}
        tier1, _ = await asyncio.gather(
            self._tell_tier(directory.contacts(owner, 1), farm, burst.opened, burst.reminded, burst.cleared, told),
            self._tell_tier(directory.contacts(owner, 2), farm, burst.escalated,
                            [a for a in burst.reminded if a.tier >= 2 and a.id not in escalated],
                            [a for a in burst.cleared if a.tier >= 2], told),
        )
        if (burst.opened or burst.reminded) and tier1.delivered == 0 and tier1.deferred == 0:
            log.warning("farm %s: no channel of tier 1 delivered (%d tried): escalating now", farm.farm_id,
                        tier1.attempted)
            self.on_tier_failed(farm.farm_id)

    def _flush(self) -> None:
        """On the store's thread."""
        steps, results = self._steps, self._results
        self._steps, self._results = [], []
        store: AlertStore = self.store.store
        store.record(steps)
        for username, url, ok, error, now in results:
            store.channel_result(username, url, ok, error, now)

    def _flush_and_look_up(self, farms: list[FarmInfo], cleared: list[str]
                           ) -> tuple[Directory, dict[str, str | None], dict[str, set[str]]]:
        """On the store's thread: the directory, each farm's owner and who was told of each cleared alert."""
        self._flush()
        store: AlertStore = self.store.store
        try:
            identities = {identity.username: identity for identity in self.identities.all()}
            owners = {farm.farm_id: self.identities.owner_of(farm.farm_id, farm.declared_owner) for farm in farms}
        except StoreError as exc:
            log.error("cannot read the identities: %s; no one can be told", exc)
            identities, owners = {}, {farm.farm_id: farm.declared_owner for farm in farms}
        directory = Directory(tuple(store.channels()), store.recipients(), identities)
        return directory, owners, {alert_id: store.told([alert_id]) for alert_id in cleared}

    async def _tell_tier(self, contacts: list[Contact], farm: FarmInfo, new: list[Alert], reminded: list[Alert],
                         cleared: list[Alert], told: dict[str, set[str]]) -> _Outcome:
        now = self.clock()
        sends = []
        deferred = 0
        for contact in contacts:
            user = contact.recipient.username
            own_cleared = [a for a in cleared if user in told.get(a.id, set())]
            quiet = in_quiet_hours(contact.recipient, now, _localiser(contact.recipient.timezone))
            for channel in contact.channels:
                parts = [wanted(new, channel), wanted(reminded, channel), wanted(own_cleared, channel)]
                if quiet:
                    waiting = [a for part in parts for a in part if a not in loud(part)]
                    parts = [loud(part) for part in parts]
                    if waiting:
                        deferred += 1
                        self._steps.append(Step(now, farm.farm_id, tuple(a.id for a in waiting), "deferred", user,
                                                display(channel.url), None, "quiet hours"))
                if not any(parts):
                    continue
                message = compose(farm.farm_id, farm.name, new=parts[0], reminded=parts[1], cleared=parts[2],
                                  reader=contact.reader, book=self.book, link=self.link(farm.farm_id))
                step = "opened" if parts[0] else "reminder" if parts[1] else "cleared"
                sends.append(self._send(user, channel, message, step, counts=bool(parts[0] or parts[1])))
        results = await asyncio.gather(*sends)
        counted = [ok for ok, counts in results if counts]
        return _Outcome(len(counted), sum(counted), deferred)

    async def _send(self, user: str, channel: Channel, message: Message, step: str,
                    counts: bool) -> tuple[bool, bool]:
        if step == "opened" and channel.tier == 2:
            step = "escalated"
        delivery = await self.channels.deliver(channel.url, message)
        now = self.clock()
        self._steps.append(Step(now, message.farm_id, message.alert_ids, step, user, display(channel.url),
                                delivery.ok, delivery.error))
        self._results.append((channel.username, channel.url, delivery.ok, delivery.error, now))
        self.delivered["ok" if delivery.ok else "failed"] += 1
        self.channel_ok[user, display(channel.url)] = delivery.ok
        if not delivery.ok:
            log.warning("farm %s: %s to %s via %s failed after %d attempt(s): %s", message.farm_id, step, user,
                        display(channel.url), delivery.attempts, delivery.error)
        return delivery.ok, counts


def _localiser(timezone: str | None) -> Callable[[datetime], datetime]:
    zone = None
    if timezone:
        try:
            zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            zone = None
    return lambda moment: moment.astimezone(zone)
