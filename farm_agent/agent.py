"""The farm agent: polls the controller, publishes what it reads, and keeps the farm's presence.

Two loops share one :class:`FarmState`: the poll loop owns the Modbus link and
never stops on a link fault, nor waits for the broker; the MQTT session loop
(re)connects with the farm's last will, republishes the farm's retained topics
on every connect, and publishes readings, alarms, events and heartbeats.

Every reading worth publishing is numbered and queued on disk first
(:mod:`farm_agent.queue`), then published live on ``state``; it leaves the queue
on its PUBACK. After a reconnect the newest reading goes out on ``state`` at once
and the rest of the queue is replayed on ``backlog``, oldest first, at a bounded
rate beside the live readings.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

import aiomqtt

from common.mqtt import LastWill, async_client
from common.runtime import run_until_stopped
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
from contract.topics import Topics, ha_status_topic
from farm_agent import homeassistant
from farm_agent.control import CommandHandler
from farm_agent.events import alarm_events, sensor_events
from farm_agent.link import ModbusFailure
from farm_agent.poller import Poller
from farm_agent.profile import Profile
from farm_agent.queue import ReadingQueue
from farm_agent.report import named_bits, worth_publishing
from farm_agent.settings import AgentSettings

log = logging.getLogger("kubmesh.agent")

AGENT_VERSION = version("kubmesh")


@dataclass
class FarmState:
    """What the agent knows now; the HTTP API and heartbeats read it."""

    reading: Reading | None = None
    alarms: Alarms | None = None
    firmware: str | None = None
    modbus_ok: bool = False
    modbus_error: str | None = None
    mqtt_connected: bool = False
    polls_ok: int = 0
    polls_failed: int = 0
    last_poll_ts: float | None = None
    last_published: float = 0.0  # monotonic time of the last published reading
    polls_unchanged: int = 0
    bytes_published: int = 0
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
        control: CommandHandler,
        clock: Clock = utc_now,
    ) -> None:
        self.settings = settings
        self.profile = profile
        self.poller = poller
        self.queue = queue
        self.control = control
        self.clock = clock
        self.topics = Topics(settings.base_topic)
        self.farm_id = settings.farm_id
        self.state = FarmState()
        self._client: aiomqtt.Client | None = None
        self._publish_lock = asyncio.Lock()
        self._poll_now = asyncio.Event()  # set after a command, so its effect shows without waiting a poll
        self.on_poll_timed: Callable[[float], None] | None = None  # seconds each successful poll took (metrics)
        self._sending: set[asyncio.Task[object]] = set()  # publishes the poll loop started and does not wait for
        self._reporting_drops = asyncio.Lock()  # one report at a time, so no drop is told twice

    # ---- running ----------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        poll = asyncio.create_task(self._poll_loop(stop), name="poll")
        session = asyncio.create_task(self._mqtt_loop(stop), name="mqtt")
        try:
            await stop.wait()
        finally:
            poll.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poll
            await session
            self.poller.close()

    async def _poll_loop(self, stop: asyncio.Event) -> None:
        interval = self.settings.poll_interval
        next_at = time.monotonic()
        while not stop.is_set():
            await self.poll_once()
            next_at += interval
            now = time.monotonic()
            if next_at < now:  # a slow poll (timeouts) moves the schedule instead of bursting to catch up
                next_at = now + interval
            await _wait_any((stop, self._poll_now), next_at - now)
            if self._poll_now.is_set():
                self._poll_now.clear()
                next_at = time.monotonic()

    async def poll_once(self) -> None:
        """One poll: read, decode, publish. A link fault is reported and the next poll tries again."""
        try:
            if self.state.firmware is None:
                self.state.firmware = await self.poller.read_firmware()
                await self._publish_meta()
            started = time.monotonic()
            result = await self.poller.poll()
        except ModbusFailure as exc:
            self.state.polls_failed += 1
            await self._modbus_failed(exc)
            return
        self.state.polls_ok += 1
        self.state.last_poll_ts = time.time()
        if self.on_poll_timed is not None:
            self.on_poll_timed(time.monotonic() - started)
        if not self.state.modbus_ok:
            await self._modbus_restored()
        ts = self.clock()
        previous = self.state.reading
        alarms = Alarms(ts=ts, **result.alarms)
        events = sensor_events(previous.status if previous else None, result.status, ts)
        alarms_changed = self.state.alarms is None or _alarm_lists(self.state.alarms) != _alarm_lists(alarms)
        if alarms_changed:
            events += alarm_events(_alarm_lists(self.state.alarms) if self.state.alarms else None,
                                   _alarm_lists(alarms), ts)
        due = time.monotonic() - self.state.last_published >= self.settings.max_interval
        if due or worth_publishing(self.profile, previous.values if previous else None,
                                   previous.status if previous else None, result.values, result.status):
            reading, dropped = self.queue.add(lambda seq: Reading(
                ts=ts, seq=seq, values=result.values, status=result.status,
                bits=named_bits(self.profile, result.values) or None,
            ))
            self.state.reading = reading
            self.state.last_published = time.monotonic()
            self._send_soon(self._publish_live(reading))
            if dropped:
                self._send_soon(self._report_drops())
        else:
            self.state.polls_unchanged += 1
        if alarms_changed:
            self.state.alarms = alarms
            self._send_soon(self._publish(self.topics.alarms(self.farm_id), encode(alarms), retain=True))
        for event in events:
            self._send_soon(self._publish_event(event))

    def _send_soon(self, publish: Coroutine[Any, Any, object]) -> None:
        """Publish without holding up the poll: a half-open link may keep a PUBACK waiting for seconds.

        The publish lock is taken in the order the tasks start, so the order of messages is kept.
        """
        task = asyncio.create_task(publish)
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _publish_live(self, reading: Reading) -> None:
        if await self._publish(self.topics.state(self.farm_id), encode(reading), retain=True):
            self.queue.remove([reading.seq])

    async def _report_drops(self) -> None:
        """Readings the queue's bounds pushed out are told about, once, as soon as the broker listens."""
        async with self._reporting_drops:
            count = self.queue.unreported_drops()
            if count <= 0:
                return
            event = Event(ts=self.clock(), kind="backlog_dropped",
                          message=f"backlog full: the {count} oldest unsent reading(s) were dropped",
                          detail={"dropped": count, "dropped_total": self.queue.dropped})
            if await self._publish(self.topics.events(self.farm_id), encode(event)):
                self.queue.drops_reported(count)

    async def _modbus_failed(self, exc: ModbusFailure) -> None:
        message = str(exc)
        if self.state.modbus_ok or self.state.modbus_error is None:
            log.warning("farm %s: Modbus link fault: %s", self.farm_id, message)
            self.state.modbus_ok = False
            self.state.modbus_error = message
            self.state.firmware = None  # read again once the device answers: it may have been replaced
            await self._publish_event(
                Event(ts=self.clock(), kind="modbus_error", message=message, detail={"error": type(exc).__name__})
            )
            await self._publish_heartbeat()

    async def _modbus_restored(self) -> None:
        if self.state.modbus_error is not None:
            log.info("farm %s: Modbus link restored", self.farm_id)
            await self._publish_event(Event(ts=self.clock(), kind="modbus_restored", message="Modbus link restored"))
        self.state.modbus_ok = True
        self.state.modbus_error = None
        await self._publish_heartbeat()

    # ---- MQTT session -------------------------------------------------------------------------------

    async def _mqtt_loop(self, stop: asyncio.Event) -> None:
        url = self.settings.mqtt()
        will = LastWill(
            self.topics.status(self.farm_id),
            encode(Status(state="offline", ts=self.clock(), reason="connection lost")),
        )
        delay = min(1.0, self.settings.reconnect_max)
        while not stop.is_set():
            try:
                async with async_client(
                    url, f"kubmesh-agent-{self.farm_id}", will=will, keepalive=self.settings.keepalive
                ) as client:
                    delay = min(1.0, self.settings.reconnect_max)
                    try:
                        backlog_below = self.queue.next_seq  # what was read before this connect is backlog
                        await self._on_connected(client)
                        await client.subscribe(self.topics.set_filter(self.farm_id), qos=1)
                        if self.settings.ha_discovery:
                            await client.subscribe(ha_status_topic(self.settings.ha_prefix), qos=1)
                        # returns on stop; a broken connection raises MqttError here, and we reconnect
                        if await run_until_stopped(stop, self._heartbeats(), self._messages(client),
                                                   self._replay(client, backlog_below)):
                            await self._say_goodbye(client)
                            return
                        raise aiomqtt.MqttError("the broker ended the session")
                    finally:
                        # at once, not after the client's own clean-up, which may wait out its timeout
                        self._client = None
                        self.state.mqtt_connected = False
            except aiomqtt.MqttError as exc:
                log.warning("farm %s: broker %s unreachable: %s; retrying in %.0f s",
                            self.farm_id, url.redacted(), exc, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, self.settings.reconnect_max)

    async def _on_connected(self, client: aiomqtt.Client) -> None:
        """Publish (again) everything a broker that lost its retained messages needs to show the farm."""
        log.info("farm %s: connected to the broker", self.farm_id)
        self._client = client
        self.state.mqtt_connected = True
        await self._publish(self.topics.status(self.farm_id),
                            encode(Status(state="online", ts=self.clock())), retain=True)
        await self._publish_meta()
        if self.state.reading:
            await self._publish_live(self.state.reading)
        if self.state.alarms:
            await self._publish(self.topics.alarms(self.farm_id), encode(self.state.alarms), retain=True)
        await self._publish_event(Event(ts=self.clock(), kind="agent_online",
                                        message=f"agent {AGENT_VERSION} connected"))
        await self._report_drops()

    async def _replay(self, client: aiomqtt.Client, below: int) -> None:
        """Send the queued readings numbered below ``below`` on ``backlog``, oldest first, then idle.

        A window of readings is in flight at a time, and the pace is capped at ``replay_rate`` per
        second, so live readings, published beside it, keep their pace through the broker.
        """
        topic = self.topics.backlog(self.farm_id)
        rate, window = self.settings.replay_rate, self.settings.replay_window
        started, sent = time.monotonic(), 0
        while batch := self.queue.oldest(below, window):
            await asyncio.gather(*(client.publish(topic, queued.payload, qos=1) for queued in batch))
            self.queue.remove([queued.seq for queued in batch])
            sent += len(batch)
            self.state.bytes_published += sum(len(queued.payload) + len(topic) for queued in batch)
            if rate > 0:
                await asyncio.sleep(max(0.0, started + sent / rate - time.monotonic()))
        if sent:
            log.info("farm %s: replayed %d backlog reading(s) in %.1f s", self.farm_id, sent,
                     time.monotonic() - started)
        await asyncio.Event().wait()  # the session's other loops decide when it ends

    async def _heartbeats(self) -> None:
        while True:
            await self._publish_heartbeat()
            await asyncio.sleep(self.settings.heartbeat_interval)

    async def _messages(self, client: aiomqtt.Client) -> None:
        ha_status = ha_status_topic(self.settings.ha_prefix)
        announcing: set[asyncio.Task[None]] = set()
        async for message in client.messages:
            topic = message.topic.value
            if topic == ha_status:
                if message.payload == b"online":
                    task = asyncio.create_task(self._announce_to_home_assistant_again())
                    announcing.add(task)
                    task.add_done_callback(announcing.discard)
                continue
            try:
                name = self.topics.parse(topic).name
            except ValueError:
                name = topic.rsplit("/", 1)[-1]
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            result = await self.control.handle(name, payload, retained=bool(message.retain))
            await self._publish(self.topics.ack(self.farm_id), encode(result.ack))
            if result.applied:
                ack = result.ack
                await self._publish_event(Event(
                    ts=ack.ts, kind="command_applied", message=f"{ack.name} = {ack.value}",
                    detail={"id": ack.id, "name": ack.name, "value": ack.value},
                ))
                self._poll_now.set()

    async def _say_goodbye(self, client: aiomqtt.Client) -> None:
        """A clean stop: tell everyone, then disconnect (a clean disconnect sends no last will)."""
        await self._publish_event(Event(ts=self.clock(), kind="agent_stopping", message="agent stopping"))
        await self._publish(self.topics.status(self.farm_id),
                            encode(Status(state="offline", ts=self.clock(), reason="agent stopped")), retain=True)

    async def _publish(self, topic: str, payload: bytes, retain: bool = False) -> bool:
        client = self._client
        if client is None:
            return False
        try:
            async with self._publish_lock:
                await client.publish(topic, payload, qos=1, retain=retain)
        except aiomqtt.MqttError as exc:
            log.warning("farm %s: publish to %s failed: %s", self.farm_id, topic, exc)
            return False
        self.state.bytes_published += len(payload) + len(topic)
        return True

    async def _publish_event(self, event: Event) -> None:
        await self._publish(self.topics.events(self.farm_id), encode(event))

    async def _publish_heartbeat(self) -> None:
        await self._publish(self.topics.heartbeat(self.farm_id), encode(self.heartbeat()), retain=True)

    async def _publish_meta(self) -> None:
        await self._publish(self.topics.meta(self.farm_id), encode(self.meta()), retain=True)
        await self._publish_home_assistant_config()

    async def _publish_home_assistant_config(self) -> None:
        if not self.settings.ha_discovery:
            return
        config = homeassistant.device_config(
            self.profile, self.topics, self.farm_id, farm_name=self.settings.farm_name or self.farm_id,
            firmware=self.state.firmware, location=self.settings.location, agent_version=AGENT_VERSION,
            language=self.settings.ha_language,
        )
        await self._publish(homeassistant.config_topic(self.settings.ha_prefix, self.farm_id),
                            json.dumps(config, ensure_ascii=False).encode(), retain=True)

    async def _announce_to_home_assistant_again(self) -> None:
        """HA restarted: configs again after a short random delay (a fleet must not burst), then states."""
        await asyncio.sleep(random.uniform(0, 3))
        await self._publish_home_assistant_config()
        await self._publish(self.topics.status(self.farm_id),
                            encode(Status(state="online", ts=self.clock())), retain=True)
        if self.state.reading:
            await self._publish(self.topics.state(self.farm_id), encode(self.state.reading), retain=True)
        if self.state.alarms:
            await self._publish(self.topics.alarms(self.farm_id), encode(self.state.alarms), retain=True)
        await self._publish_heartbeat()

    # ---- payloads -------------------------------------------------------------------------------------

    def heartbeat(self) -> Heartbeat:
        state = self.state
        hours = max(state.uptime_s / 3600, 1 / 60)
        return Heartbeat(
            ts=self.clock(),
            uptime_s=round(state.uptime_s, 1),
            polls_ok=state.polls_ok,
            polls_failed=state.polls_failed,
            modbus="ok" if state.modbus_ok else "error",
            backlog=len(self.queue),
            dropped=self.queue.dropped,
            bytes_per_hour=int(state.bytes_published / hours),
        )

    def meta(self) -> Meta:
        settings = self.settings
        return Meta(
            farm_id=self.farm_id,
            name=settings.farm_name or self.farm_id,
            owner_id=settings.owner_id,
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


async def _wait_any(events: tuple[asyncio.Event, ...], seconds: float) -> None:
    """Return when any of ``events`` is set or after ``seconds``."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=max(0.0, seconds), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def _alarm_lists(alarms: Alarms) -> dict[str, list[AlarmItem]]:
    return {
        "active": alarms.active,
        "latched": alarms.latched,
        "warnings": alarms.warnings,
        "latched_warnings": alarms.latched_warnings,
    }
