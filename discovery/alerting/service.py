"""The alerting of the discovery node: typed farm messages in; alerts opened, told, reminded, escalated
and cleared; each farm's open alerts published retained; acknowledgements from REST and MQTT.

It runs on the node's event loop; the disk is reached only through the store's worker thread and the
network only through the channels' senders.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel

from common.identities import IdentityStore, Role, StoreError
from contract.messages import AlertAckMessage, FarmMessage
from contract.payloads import AlertItem, Clock, FarmAlerts, encode
from contract.topics import Topics
from discovery.alerting.channels import Channels
from discovery.alerting.compose import describe
from discovery.alerting.conditions import PRESENCE, FarmWatch
from discovery.alerting.dispatcher import Dispatcher, FarmInfo
from discovery.alerting.engine import Alert, AlertEngine, Burst, Timing
from discovery.alerting.rules import RuleBook
from discovery.alerting.store import AlertStore, KnownFarm, Step, StoreThread

log = logging.getLogger("kubmesh.discovery.alerting")
Publish = Callable[[str, bytes], Awaitable[None]]  # retained, QoS 1; raises when not connected
FARM_SAVE_INTERVAL_S = 30.0  # how often the farms' last-heard times reach the disk
REST_LANGUAGE = "en"
STOP_WAIT_S = 5.0
PRESENCE_CHECK_S = 0.5
KEEP_DAYS = 90  # steps, and alerts cleared, are kept this long in the store
PRUNE_INTERVAL_S = 3600.0  # how often silence is looked for: fine enough beside ALERT_SILENT_AFTER
SYNC_INTERVAL_S = 1.0  # how often the engine takes in what the other nodes wrote of the alerts (acknowledgements)


@dataclass(frozen=True)
class AlertingConfig:
    timing: Timing
    silent_after: float
    book: RuleBook
    link_url: str | None = None
    tick_interval: float = 0.5

    def link(self, farm_id: str) -> str | None:
        return f"{self.link_url.rstrip('/')}/farms/{farm_id}" if self.link_url else None


class AckRefused(ValueError):
    """An acknowledgement that names no alert open, or comes from someone who may not give it."""


class AlertingService:
    def __init__(self, config: AlertingConfig, store: AlertStore, identities: IdentityStore, topics: Topics,
                 channels: Channels, clock: Clock) -> None:
        self.config = config
        self.store = StoreThread(store)
        self.identities = identities
        self.topics = topics
        self.channels = channels
        self.clock = clock
        self.engine = AlertEngine(config.timing)
        self.dispatcher = Dispatcher(self.store, channels, identities, config.book, clock, config.link,
                                     self.engine.tier_failed)
        self.watches: dict[str, FarmWatch] = {}
        self.publish: Publish | None = None
        # whether this node tells (of several nodes, the one that holds the storage's lease); every node keeps
        # the alerts (in one shared store), so the one that takes the lease over goes on with the reminders and
        # the all clear
        self.may_notify: Callable[[], bool] = lambda: True
        self._unpublished: set[str] = set()
        self._sending: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._farms_saved = datetime.min.replace(tzinfo=UTC)
        self._presence_checked = datetime.min.replace(tzinfo=UTC)
        self._pruned = datetime.min.replace(tzinfo=UTC)
        self._synced = datetime.min.replace(tzinfo=UTC)
        self._notifying = False
        self._ticking = asyncio.Lock()

    # ---- start and stop -----------------------------------------------------------------------------

    async def start(self, publish: Publish | None = None) -> None:
        """Take up the alerts and farms of the last run, then watch."""
        self.publish = publish
        await self.store.call(self.store.store.open)
        alerts, farms = await self.store.call(_restore, self.store.store)
        self.engine = AlertEngine(self.config.timing, alerts)
        self.dispatcher.on_tier_failed = self.engine.tier_failed
        for farm in farms:
            watch = self._watch(farm.farm_id)
            watch.name, watch.declared_owner, watch.last_heard = farm.name, farm.owner, farm.last_heard
        await self._resolve_owners()
        self._unpublished.update({alert.farm_id for alert in alerts})
        self._farms_saved = self.clock()
        log.info("alerting: %d alert(s) not yet cleared, %d farm(s) known, %d rule(s) from %s", len(alerts),
                 len(farms), len(self.config.book.rules), self.config.book.source)
        await self.channels.warm_up()
        self._ticker = asyncio.create_task(self._tick_forever())

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_WAIT_S):  # a message still retrying is given up; its step stays
                await self.drain()
        await self._persist(force_farms=True)
        await self.dispatcher.flush()
        self.channels.close()
        self.store.close()

    # ---- inputs -------------------------------------------------------------------------------------

    def on_message(self, message: FarmMessage[BaseModel]) -> None:
        now = self.clock()
        watch = self._watch(message.farm_id)
        for source, conditions in watch.on_message(message, now, self.config.silent_after):
            self.engine.update(message.farm_id, source, conditions, now)
        # written by the next round, in one transaction with the rest: the bus does not wait on the disk for
        # each message, and what a crash before it loses, the retained messages say again after the restart

    async def on_ack(self, message: AlertAckMessage) -> None:
        """``{base}/alerts/{farm}/ack`` from an operator; one that may not be honoured is logged, changes nothing."""
        try:
            await self.acknowledge_farm(message.farm_id, message.payload.id, message.payload.by, via="mqtt")
        except AckRefused as exc:
            log.info("refused an acknowledgement for farm %s: %s", message.farm_id, exc)

    async def acknowledge(self, alert_id: str, by: str, via: str) -> Alert:
        now = self.clock()
        alert = self.engine.acknowledge(alert_id, by, now)
        if alert is None:
            raise AckRefused(f"no alert {alert_id!r} is open")
        await self.store.call(self.store.store.record,
                              [Step(now, alert.farm_id, (alert.id,), "acknowledged", by, via, None, None)])
        self._unpublished.add(alert.farm_id)
        await self._persist()
        return replace(alert)

    async def acknowledge_farm(self, farm_id: str, alert_id: str | None, by: str, via: str) -> list[Alert]:
        """Acknowledge one alert of the farm, or (no id) every open one; ``by`` must be an operator or admin."""
        if not await self.store.call(self._may_acknowledge, by, farm_id):
            raise AckRefused(f"{by!r} is not an operator or admin of farm {farm_id}")
        targets = [a.id for a in self.engine.alerts(farm_id) if a.state == "open" and alert_id in (None, a.id)]
        if alert_id is not None and not targets:
            raise AckRefused(f"no alert {alert_id!r} is open on farm {farm_id}")
        return [await self.acknowledge(target, by, via) for target in targets]

    def _may_acknowledge(self, username: str, farm_id: str) -> bool:
        try:
            identity = self.identities.get(username)
            if identity is None or identity.role not in (Role.OPERATOR, Role.ADMIN):
                return False
            watch = self.watches.get(farm_id)
            owner = self.identities.owner_of(farm_id, watch.declared_owner if watch else None)
        except StoreError:
            return False
        return identity.role is Role.ADMIN or identity.owner is None or identity.owner == owner

    # ---- reading ------------------------------------------------------------------------------------

    async def alert_items(self, farm_id: str | None, state: str) -> list[AlertItem]:
        alerts = await self.store.call(self.store.store.alerts, farm_id, state)
        return [self.item(alert) for alert in alerts]

    def item(self, alert: Alert) -> AlertItem:
        """The alert as REST and MQTT show it; what it does not have (yet) is left out, not null."""
        fields = {"id": alert.id, "farm_id": alert.farm_id, "kind": alert.kind, "severity": alert.severity.value,
                  "state": alert.state, "opened": alert.opened, "since": alert.since,
                  "acknowledged_by": alert.acknowledged_by, "acknowledged": alert.acknowledged,
                  "cleared": alert.cleared, "message": describe(alert, REST_LANGUAGE, self.config.book),
                  "value": alert.value, "subject": alert.subject}
        return AlertItem.model_validate({key: value for key, value in fields.items() if value is not None})

    def farm_owner(self, farm_id: str) -> str | None:
        """Blocking (the identity store's file)."""
        watch = self.watches.get(farm_id)
        return self.identities.owner_of(farm_id, watch.declared_owner if watch else None)

    def health(self) -> dict[str, object]:
        """For ``/health``: alerts by state, messages being sent, and the channels failing now."""
        alerts = self.engine.alerts()
        failing = sorted(f"{user} {channel}" for (user, channel), ok in self.dispatcher.channel_ok.items() if not ok)
        return {"open": sum(a.state == "open" for a in alerts),
                "acknowledged": sum(a.state == "acknowledged" for a in alerts),
                "sending": len(self._sending), "channels_failing": failing}

    # ---- the clock ----------------------------------------------------------------------------------

    async def _tick_forever(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # the watch must go on whatever one round met
                log.exception("alerting: a round failed")
            await asyncio.sleep(self.config.tick_interval)

    async def tick(self) -> None:
        # one round at a time: a round called while the timer's waits on the store would decide on the same alerts
        async with self._ticking:
            await self._round()

    async def _round(self) -> None:
        now = self.clock()
        if now - self._presence_checked >= timedelta(seconds=PRESENCE_CHECK_S):
            self._presence_checked = now
            for farm_id, watch in self.watches.items():
                presence = watch.presence(now, self.config.silent_after)
                if watch.silent != bool(presence):  # only a change is news to the engine
                    watch.silent = bool(presence)
                    self.engine.update(farm_id, PRESENCE, presence, now)
        notifying = self.may_notify()
        # a node that has just taken the notifications over starts from what the others wrote, so that it does
        # not remind of an alert acknowledged through another node
        if now - self._synced >= timedelta(seconds=SYNC_INTERVAL_S) or (notifying and not self._notifying):
            await self._sync(now)
        self._notifying = notifying
        bursts = self.engine.tick(now, telling=notifying)
        await self._persist()
        await self.dispatcher.flush()
        if bursts:
            self._unpublished.update(burst.farm_id for burst in bursts)
            self._track(asyncio.create_task(self._dispatch(bursts)))
        await self._publish_changed()

    async def drain(self) -> None:
        """Wait for the messages being sent (each with its retries) to be delivered or given up."""
        while self._sending:
            await asyncio.wait(set(self._sending))

    async def _dispatch(self, bursts: list[Burst]) -> None:
        round_ = []
        for burst in bursts:
            watch = self.watches.get(burst.farm_id)
            farm = FarmInfo(burst.farm_id, watch.name if watch else None, watch.declared_owner if watch else None)
            round_.append((_copy(burst), farm))
        for task in await self.dispatcher.dispatch(round_):
            self._track(task)

    def _track(self, task: asyncio.Task[None]) -> None:
        self._sending.add(task)
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("alerting: sending failed", exc_info=task.exception())

    async def _persist(self, force_farms: bool = False) -> None:
        changed = self.engine.take_changed()
        for alert in changed:
            self._unpublished.add(alert.farm_id)
        now = self.clock()
        farms: list[KnownFarm] = []
        if force_farms or now - self._farms_saved >= timedelta(seconds=FARM_SAVE_INTERVAL_S):
            self._farms_saved = now
            farms = [KnownFarm(w.farm_id, w.name, w.declared_owner, w.last_heard) for w in self.watches.values()]
        if changed or farms:
            opened_elsewhere = await self.store.call(_save, self.store.store, changed, farms)
            self._unpublished.update(self.engine.merge(opened_elsewhere))
        if farms:
            await self._resolve_owners()
        if now - self._pruned >= timedelta(seconds=PRUNE_INTERVAL_S):
            self._pruned = now
            await self.store.call(self.store.store.prune, now - timedelta(days=KEEP_DAYS))

    async def _sync(self, now: datetime) -> None:
        """Take in what every node wrote of the alerts (the rows are shared on PostgreSQL), once what this one
        changed since its last write is written: else an alert cleared here would come back from its row."""
        await self._persist()
        self._synced = now
        held = [alert.id for alert in self.engine.alerts()]
        self._unpublished.update(self.engine.merge(await self.store.call(self.store.store.current, held)))

    async def _resolve_owners(self) -> None:
        """Whose each farm is, from the identity store (a file): read on the store's thread, now and then."""
        declared = {farm_id: watch.declared_owner for farm_id, watch in self.watches.items()}
        owners = await self.store.call(self._owners, declared)
        for farm_id, owner in owners.items():
            if farm_id in self.watches:
                self.watches[farm_id].owner = owner

    def _owners(self, declared: dict[str, str | None]) -> dict[str, str | None]:
        try:
            return {farm_id: self.identities.owner_of(farm_id, owner) for farm_id, owner in declared.items()}
        except StoreError:
            return declared

    async def _publish_changed(self) -> None:
        if self.publish is None:
            return
        for farm_id in sorted(self._unpublished):
            alerts = [self.item(alert) for alert in self.engine.alerts(farm_id)]
            payload = encode(FarmAlerts(farm_id=farm_id, ts=self.clock(), alerts=alerts))
            try:
                await self.publish(self.topics.alerts(farm_id), payload)
            except Exception as exc:  # not connected: the next round tries again
                log.debug("alerting: cannot publish the alerts of %s yet: %s", farm_id, exc)
                return
            self._unpublished.discard(farm_id)

    def republish(self) -> None:
        """After a reconnect to a broker that may have lost its retained messages."""
        self._unpublished.update(self.watches)

    def _watch(self, farm_id: str) -> FarmWatch:
        watch = self.watches.get(farm_id)
        if watch is None:
            watch = self.watches[farm_id] = FarmWatch(farm_id, self.config.book)
        return watch


def _copy(burst: Burst) -> Burst:
    """What the dispatcher reads while the engine goes on changing its own alerts."""
    return Burst(burst.farm_id, [replace(a) for a in burst.opened], [replace(a) for a in burst.escalated],
                 [replace(a) for a in burst.reminded], [replace(a) for a in burst.cleared])


def _restore(store: AlertStore) -> tuple[list[Alert], list[KnownFarm]]:
    return store.unresolved_alerts(), store.farms()


def _save(store: AlertStore, alerts: list[Alert], farms: list[KnownFarm]) -> list[Alert]:
    """The alerts written; those another node had opened first, as stored."""
    opened_elsewhere = store.save_alerts(alerts)
    if farms:
        store.save_farms(farms)
    return opened_elsewhere
