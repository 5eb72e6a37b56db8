"""The core of one house: its polls, its queue and reporter, and its own MQTT session.

A site (:mod:`farm_agent.site`) runs one :class:`FarmAgent` per controller; the bus scheduler
(:mod:`farm_agent.schedule`) calls :meth:`FarmAgent.poll_once` in the house's turn and never
stops on a fault, nor waits for the broker: a reading worth publishing (:mod:`farm_agent.report`)
is numbered and queued (:mod:`farm_agent.queue`), then sent by the
:class:`~farm_agent.reporter.Reporter`. The house's session (:class:`common.session.MqttSession`)
reconnects with the house's own last will and, on every connect, publishes its retained topics
again; the reporter sends what the history has not confirmed yet while the discovery node is online
(:mod:`farm_agent.extensions.primary_host` tells it). Every other feature is an extension (:mod:`farm_agent.extension`),
one set per house, told about polls, health changes, connects and messages.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import version

import aiomqtt

from common.mqtt import LastWill
from common.runtime import run_until_stopped
from common.session import MqttSession
from contract.payloads import (
    AlarmItem,
    Alarms,
    Clock,
    DeviceInfo,
    Event,
    Heartbeat,
    Meta,
    Reading,
    Status,
    encode,
    utc_now,
)
from contract.topics import Topics
from farm_agent.extension import Extension, Extensions, HealthChange, Inbound, Polled
from farm_agent.link import ModbusFailure
from farm_agent.poller import Poller, PollResult
from farm_agent.profile import Profile
from farm_agent.publisher import Publisher
from farm_agent.queue import Queued, ReadingQueue
from farm_agent.report import make_reading, worth_publishing
from farm_agent.reporter import Reporter
from farm_agent.schedule import BusCycle
from farm_agent.settings import AgentSettings

log = logging.getLogger("kubmesh.agent")

AGENT_VERSION = version("kubmesh")


@dataclass
class FarmState:
    """What the agent knows now; the HTTP API, heartbeats and metrics read it."""

    reading: Reading | None = None
    latest: Queued | None = None  # the newest reading's bytes, as published on ``state``
    alarms: Alarms | None = None
    firmware: str | None = None
    modbus_ok: bool = False
    modbus_error: str | None = None
    storage_error: str | None = None  # why readings are kept in memory: the data dir refuses writes
    mqtt_connected: bool = False
    polls_ok: int = 0
    polls_failed: int = 0
    last_published: float = 0.0  # monotonic time of the last published reading
    cycle: BusCycle | None = None  # the newest poll cycle of the house's bus
    started: float = field(default_factory=time.monotonic)

    @property
    def uptime_s(self) -> float:
        return time.monotonic() - self.started


class FarmAgent:
    def __init__(
        self,
        settings: AgentSettings,
        profile: Profile,
        poller: Poller,
        queue: ReadingQueue,
        extensions: Sequence[type[Extension]],
        clock: Clock = utc_now,
    ) -> None:
        self.settings = settings
        self.profile = profile
        self.poller = poller
        self.queue = queue
        self.clock = clock
        self.farm_id = settings.house_id
        self.topics = Topics(settings.base_topic)
        self.state = FarmState()
        self.publisher = Publisher(self.farm_id)
        self.reporter = Reporter(self.publisher, queue, self.topics, self.farm_id,
                                 settings.replay_rate, settings.replay_window, settings.confirm_timeout)
        self.extensions = Extensions(extensions, self)
        self.poll_requested = asyncio.Event()  # the bus scheduler polls this house out of turn
        self.site_houses: tuple[str, ...] = (self.farm_id,)  # every house of the site, in the configured order
        self._stop = asyncio.Event()

    # ---- running ----------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """The house's session and extensions until ``stop``; the bus scheduler polls it meanwhile."""
        self._stop = stop
        session = MqttSession(
            self.settings.mqtt(), f"kubmesh-agent-{self.farm_id}", purpose=f"farm {self.farm_id}",
            will=LastWill(self.topics.status(self.farm_id),
                          encode(Status(state="offline", ts=self.clock(), reason="connection lost"))),
            keepalive=self.settings.keepalive, reconnect_max=self.settings.reconnect_max,
        )
        await self.extensions.start()
        try:
            await session.run(stop, self._serve)
        finally:
            await self.extensions.stop()

    def poll_now(self) -> None:
        """Poll at once (after a command, so that its effect shows without waiting a poll interval)."""
        self.poll_requested.set()

    def cycled(self, cycle: BusCycle) -> None:
        """The bus finished a poll cycle: an overrun starting or ending is told at once, in the heartbeat."""
        before, self.state.cycle = self.state.cycle, cycle
        if before is None or before.overrun != cycle.overrun:
            self.publisher.soon(self.publish_heartbeat())

    async def poll_once(self) -> None:
        """One poll: read, decode, queue and publish. A link fault is reported and the next poll tries again."""
        try:
            if self.state.firmware is None:
                self.state.firmware = await self.poller.read_firmware()
                self.publisher.soon(self.publish_meta())
            started = time.monotonic()
            result = await self.poller.poll()
        except ModbusFailure as exc:
            self.state.polls_failed += 1
            await self._modbus_failed(exc)
            return
        seconds = time.monotonic() - started
        self.state.polls_ok += 1
        answered_again = not self.state.modbus_ok
        if answered_again:
            await self._modbus_restored()
        ts = self.clock()
        previous, alarms_before = self.state.reading, self.state.alarms
        alarms = Alarms(ts=ts, **result.alarms)
        # the first answer after a fault is published whatever moved: consumers see fresh values at once
        reading = await self._report(result, ts, previous, due=answered_again)
        if alarms_before is None or alarm_lists(alarms_before) != alarm_lists(alarms):
            self.state.alarms = alarms
            self.publisher.soon(self.publish_alarms())
        await self._check_storage()
        await self.extensions.poll(Polled(ts, seconds, result.status, previous, reading, alarms_before, alarms))

    async def _report(self, result: PollResult, ts: datetime, previous: Reading | None,
                      due: bool = False) -> Reading | None:
        """Queue and send a reading when it is due or something moved beyond its deadband."""
        due = due or time.monotonic() - self.state.last_published >= self.settings.max_interval
        if not due and not worth_publishing(self.profile, previous.values if previous else None,
                                            previous.status if previous else None, result.values, result.status):
            return None
        added = self.queue.add(lambda seq: make_reading(ts, seq, result.values, result.status))
        self.state.reading, self.state.latest = added.reading, added.queued
        self.state.last_published = time.monotonic()
        self.publisher.soon(self.reporter.send_live(added.queued))
        if added.dropped:
            await self.extensions.dropped()
        return added.reading

    async def _check_storage(self) -> None:
        """Try the disk again while the queue is in memory; tell the extensions when it fails or recovers."""
        if self.queue.storage_error is not None:
            self.queue.persist()
        error, was = self.queue.storage_error, self.state.storage_error
        self.state.storage_error = error
        if (error is None) == (was is None):
            return
        if error is not None:
            log.error("farm %s: the data dir refuses writes (%s): polling goes on, unsent readings wait in "
                      "memory (at most %d)", self.farm_id, error, self.queue.max_memory)
            await self.extensions.health(HealthChange("storage", ok=False, message=error))
        else:
            log.info("farm %s: the data dir takes writes again", self.farm_id)
            await self.extensions.health(HealthChange("storage", ok=True, message="readings are stored on disk again",
                                                      recovered=True))

    async def _modbus_failed(self, exc: ModbusFailure) -> None:
        message = str(exc)
        if self.state.modbus_ok or self.state.modbus_error is None:
            log.warning("farm %s: Modbus link fault: %s", self.farm_id, message)
            self.state.modbus_ok = False
            self.state.modbus_error = message
            self.state.firmware = None  # read again once the device answers: it may have been replaced
            await self.extensions.health(HealthChange("modbus", ok=False, message=message, kind=type(exc).__name__))

    async def _modbus_restored(self) -> None:
        recovered = self.state.modbus_error is not None  # else this is the first answer since the start
        if recovered:
            log.info("farm %s: Modbus link restored", self.farm_id)
        self.state.modbus_ok = True
        self.state.modbus_error = None
        await self.extensions.health(HealthChange("modbus", ok=True, message="Modbus link restored",
                                                  recovered=recovered))

    # ---- the MQTT session ---------------------------------------------------------------------------

    async def _serve(self, client: aiomqtt.Client) -> None:
        """One connection: subscribe, announce the farm, replay the backlog and serve messages until stop."""
        self.publisher.attach(client)
        self.state.mqtt_connected = True
        try:
            log.info("farm %s: connected to the broker", self.farm_id)
            # subscribed before it says online: a command sent on seeing "online" is not lost while the agent
            # still announces itself, and a retained discovery "online" then means the node saw the announcement
            for topic in self.extensions.subscriptions():
                await client.subscribe(topic, qos=1)
            await self.publish_status()
            await self.publish_meta()
            if self.state.latest:
                await self.reporter.send_live(self.state.latest)
            await self.publish_alarms()
            await self.extensions.connected()
            if await run_until_stopped(self._stop, self._messages(client), self.reporter.replay(client)):
                await self.extensions.stopping()
                await self.publish_status(reason="agent stopped")
        finally:
            # at once, not after the client's own clean-up, which may wait out its timeout
            self.publisher.detach()
            self.state.mqtt_connected = False
            await self.extensions.disconnected()

    async def _messages(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            await self.extensions.message(Inbound(message.topic.value, payload, bool(message.retain)))

    # ---- what the core publishes ------------------------------------------------------------------------

    async def publish_status(self, reason: str | None = None) -> None:
        """``online``, or ``offline`` with the reason of a clean stop (a clean disconnect sends no last will)."""
        status = Status(state="offline", ts=self.clock(), reason=reason) if reason else \
            Status(state="online", ts=self.clock())
        await self.publisher.publish(self.topics.status(self.farm_id), encode(status), retain=True)

    async def publish_meta(self) -> None:
        meta = self.meta()
        if await self.publisher.publish(self.topics.meta(self.farm_id), encode(meta), retain=True):
            await self.extensions.meta(meta)

    async def publish_alarms(self) -> None:
        if self.state.alarms:
            await self.publisher.publish(self.topics.alarms(self.farm_id), encode(self.state.alarms), retain=True)

    async def publish_heartbeat(self) -> None:
        await self.publisher.publish(self.topics.heartbeat(self.farm_id), encode(self.heartbeat()), retain=True)

    async def publish_event(self, event: Event) -> None:
        await self.publisher.publish(self.topics.events(self.farm_id), encode(event))

    async def republish_retained(self) -> None:
        """``status``, ``state``, ``alarms`` and ``heartbeat`` again, for a consumer that lost them."""
        await self.publish_status()
        if self.state.latest:
            await self.publisher.publish(self.topics.state(self.farm_id), self.state.latest.payload, retain=True)
        await self.publish_alarms()
        await self.publish_heartbeat()

    # ---- payloads -------------------------------------------------------------------------------------

    def heartbeat(self) -> Heartbeat:
        state = self.state
        hours = max(state.uptime_s / 3600, 1 / 60)
        parts = {name: part for name, part in self.extensions.status().items() if name in Heartbeat.model_fields}
        return Heartbeat(
            ts=self.clock(),
            uptime_s=round(state.uptime_s, 1),
            polls_ok=state.polls_ok,
            polls_failed=state.polls_failed,
            modbus="ok" if state.modbus_ok else "error",
            backlog=len(self.queue),
            dropped=self.queue.dropped,
            bytes_per_hour=int(self.publisher.bytes_published / hours),
            storage_error=state.storage_error,
            in_memory=self.queue.in_memory if state.storage_error else None,
            cycle_s=round(state.cycle.seconds, 3) if state.cycle else None,
            cycle_wire_s=round(state.cycle.wire_s, 3) if state.cycle else None,
            bus_units=state.cycle.units if state.cycle else None,
            held_from=self.queue.held_from,
            overrun=state.cycle.overrun if state.cycle else None,
        ).model_copy(update=parts)

    def meta(self) -> Meta:
        settings = self.settings
        return Meta(
            farm_id=self.farm_id,
            name=settings.farm_name or self.farm_id,
            owner_id=settings.owner_id,
            site=settings.site,
            location=settings.location,
            capabilities=settings.capabilities,
            device=DeviceInfo(
                model=self.profile.model,
                firmware=self.state.firmware,
                unit=self.poller.link.url.unit,
                link=self.poller.link.url.kind,
            ),
            agent_version=AGENT_VERSION,
            poll_interval_s=settings.poll_interval,
            profile=self.profile.summary(),
            ts=self.clock(),
        )


def alarm_lists(alarms: Alarms) -> dict[str, list[AlarmItem]]:
    return {
        "active": alarms.active,
        "latched": alarms.latched,
        "warnings": alarms.warnings,
        "latched_warnings": alarms.latched_warnings,
    }
