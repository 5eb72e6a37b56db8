"""Features around the agent's core, each one module with a lifecycle, as zigbee2mqtt's ``lib/extension/``.

The core (:mod:`farm_agent.agent`) polls, queues and publishes readings over one MQTT session.
Everything else — Home Assistant discovery, commands, heartbeats, events, metrics — is an
:class:`Extension`: started once the core is built, stopped before it closes, and told what
happened through the handlers it overrides (each a no-op here). :class:`Extensions` calls them in
the order of :data:`farm_agent.extensions.EXTENSIONS`; an extension that raises is logged with its
name and the handler, counted, and the others (and polling) go on. An extension whose ``start``
fails is left out until the agent restarts.

Handlers called from the poll loop (``on_poll``, ``on_health``, ``on_dropped``) must not wait on
the broker: they publish with :meth:`farm_agent.publisher.Publisher.soon`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import aiomqtt
from pydantic import BaseModel

from contract.payloads import Alarms, Meta, Reading, SensorStatus
from farm_agent.http_server import Route

if TYPE_CHECKING:
    from farm_agent.agent import FarmAgent
    from farm_agent.settings import AgentSettings

log = logging.getLogger("kubmesh.agent.extensions")


@dataclass(frozen=True)
class Polled:
    """One successful poll of the controller."""

    ts: datetime
    seconds: float  # how long the poll took
    status: Mapping[str, SensorStatus]
    previous: Reading | None  # the newest reading before this poll
    reading: Reading | None  # the reading this poll published; None when nothing moved beyond its deadband
    alarms_before: Alarms | None  # None on the first poll
    alarms: Alarms


@dataclass(frozen=True)
class HealthChange:
    """The controller link or the data dir failed, or came back."""

    part: Literal["modbus", "storage"]
    ok: bool
    message: str
    kind: str | None = None  # the failure's class, e.g. ModbusTimeout
    recovered: bool = False  # ok again after a failure (not merely the first answer since the start)


@dataclass(frozen=True)
class Inbound:
    """A message on one of the topics an extension subscribed to."""

    topic: str
    payload: bytes
    retained: bool


class Extension:
    name: ClassVar[str]

    def __init__(self, agent: FarmAgent) -> None:
        self.agent = agent
        self._tasks: set[asyncio.Task[Any]] = set()

    @classmethod
    def enabled(cls, settings: AgentSettings) -> bool:
        """Whether the settings switch this feature on."""
        return True

    def subscriptions(self) -> Sequence[str]:
        """Topic filters whose messages go to :meth:`on_message`."""
        return ()

    def routes(self) -> Mapping[str, Route]:
        """GET paths this extension adds to the agent's local HTTP API."""
        return {}

    def status(self) -> Mapping[str, BaseModel]:
        """Parts this extension adds to ``/health`` and the heartbeat, each under its field name
        (``{"sms": SmsStatus}``); the heartbeat carries those its model names."""
        return {}

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def on_connected(self) -> None:
        """The session is up and the core has published the farm's retained topics again."""

    async def on_disconnected(self) -> None:
        """The session broke or ended."""

    async def on_message(self, message: Inbound) -> None:
        """A message on one of :meth:`subscriptions`."""

    async def on_meta(self, meta: Meta) -> None:
        """``meta`` was published (on connect, and when the firmware was read)."""

    async def on_poll(self, poll: Polled) -> None:
        """A poll succeeded (from the poll loop)."""

    async def on_health(self, change: HealthChange) -> None:
        """The Modbus link or the data dir changed state (from the poll loop)."""

    async def on_dropped(self) -> None:
        """The queue's bounds dropped readings (from the poll loop)."""

    async def on_stopping(self) -> None:
        """A clean stop, while the session is still up."""

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Background work of this extension: cancelled by :meth:`stop`, and a failure is logged, not lost."""
        task = asyncio.create_task(work, name=f"{self.name}.{name}")
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("extension %s: %s failed", self.name, task.get_name(), exc_info=task.exception())


class Extensions:
    """The extensions of one agent, started, called and stopped with each isolated from the others."""

    def __init__(self, kinds: Sequence[type[Extension]], agent: FarmAgent) -> None:
        self.active = [kind(agent) for kind in kinds if kind.enabled(agent.settings)]
        self.failures = 0  # handler calls that raised

    async def start(self) -> None:
        started = []
        for extension in self.active:
            if await self._call(extension, "start", extension.start()):
                started.append(extension)
        self.active = started

    async def stop(self) -> None:
        for extension in reversed(self.active):
            await self._call(extension, "stop", extension.stop())

    def subscriptions(self) -> list[str]:
        return [topic for extension in self.active for topic in extension.subscriptions()]

    def routes(self) -> dict[str, Route]:
        return {path: route for extension in self.active for path, route in extension.routes().items()}

    def status(self) -> dict[str, BaseModel]:
        parts: dict[str, BaseModel] = {}
        for extension in self.active:
            try:
                parts.update(extension.status())
            except Exception:  # a broken part must not take /health or the heartbeat with it
                self.failures += 1
                log.exception("farm %s: extension %s failed in status; the others go on",
                              extension.agent.farm_id, extension.name)
        return parts

    async def connected(self) -> None:
        await self._each("on_connected", lambda e: e.on_connected())

    async def disconnected(self) -> None:
        await self._each("on_disconnected", lambda e: e.on_disconnected())

    async def message(self, message: Inbound) -> None:
        topic = aiomqtt.Topic(message.topic)
        for extension in self.active:
            if any(topic.matches(wanted) for wanted in extension.subscriptions()):
                await self._call(extension, "on_message", extension.on_message(message))

    async def meta(self, meta: Meta) -> None:
        await self._each("on_meta", lambda e: e.on_meta(meta))

    async def poll(self, poll: Polled) -> None:
        await self._each("on_poll", lambda e: e.on_poll(poll))

    async def health(self, change: HealthChange) -> None:
        await self._each("on_health", lambda e: e.on_health(change))

    async def dropped(self) -> None:
        await self._each("on_dropped", lambda e: e.on_dropped())

    async def stopping(self) -> None:
        await self._each("on_stopping", lambda e: e.on_stopping())

    async def _each(self, handler: str, call: Callable[[Extension], Awaitable[None]]) -> None:
        for extension in self.active:
            await self._call(extension, handler, call(extension))

    async def _call(self, extension: Extension, handler: str, work: Awaitable[None]) -> bool:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception:
            self.failures += 1
            log.exception("farm %s: extension %s failed in %s; the others go on",
                          extension.agent.farm_id, extension.name, handler)
            return False
        return True
