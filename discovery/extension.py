"""The discovery node's features as extensions around a small core (the bus and the REST API).

An :class:`Extension` is one feature: it opens what it owns in :meth:`~Extension.start`, closes it in
:meth:`~Extension.stop`, names the topic filters it wants and receives those messages already decoded
(:class:`~contract.messages.FarmMessage`, :class:`~contract.messages.DiscoveryStatus`). One that buffers
writes commits them in :meth:`~Extension.commit`, which the bus awaits before it acknowledges the
messages to the broker. One that publishes on the connection gets its :class:`ConnectionPublish` in
:meth:`~Extension.on_connected`, after the node's subscriptions are in place and before it says
``online``. :class:`Extensions` runs them: an extension that raises is logged with the farm
and the topic, counted (``/health``, ``/metrics``) and left out of that one call; the others go on.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Protocol, TypeVar

from common.identities import IdentityStore
from contract.messages import FarmMessage, Message
from contract.payloads import Clock
from contract.topics import Topics, filter_within
from discovery.settings import DiscoverySettings
from discovery.storage import Database, Lease, SoleNode, Storage, open_storage

if TYPE_CHECKING:
    from broker.server import KubBroker

log = logging.getLogger("kubmesh.discovery")

E = TypeVar("E", bound="Extension")
Publish = Callable[[str, bytes], Awaitable[None]]


class ConnectionPublish(Protocol):
    """A publish on the bus's current connection; raises ``aiomqtt.MqttError`` when it broke."""

    async def __call__(self, topic: str, payload: bytes, *, qos: int, retain: bool) -> None: ...


@dataclass
class Node:
    """What every extension may use: the settings, the topics, the clock, the storage (and its lease on the
    duties that run on one node at a time) and the other extensions."""

    settings: DiscoverySettings
    topics: Topics
    clock: Clock
    identities: IdentityStore
    broker: KubBroker | None = None
    extensions: Extensions = field(default_factory=lambda: Extensions([]))
    publish: Publish | None = None  # the bus's: retained, QoS 1, for an extension that publishes (the alerting)
    storage: Storage = field(default=None)  # type: ignore[assignment]  # None: the one the settings name
    lease: Lease = field(default_factory=SoleNode)

    def __post_init__(self) -> None:
        if self.storage is None:
            self.storage = open_storage(self.settings)


class Extension:
    """One feature of the discovery node. Subclasses override what they need."""

    name: ClassVar[str]

    def filters(self) -> list[str]:
        """The topic filters whose messages this extension receives."""
        return []

    async def start(self) -> None:
        """Open what the extension owns; the bus delivers nothing before every start has returned."""

    async def stop(self) -> None:
        """Close what the extension owns; nothing is delivered after."""

    async def on_message(self, message: Message) -> None:
        """A message on one of :meth:`filters`, decoded by the contract."""

    async def on_connected(self, publish: ConnectionPublish) -> None:
        """The bus is connected and subscribed; ``publish`` sends on this connection until it breaks."""

    async def on_disconnected(self) -> None:
        """The connection of the last :meth:`on_connected` broke or ended."""

    async def commit(self) -> None:
        """Make durable what was received so far; the bus acknowledges those messages once this returns."""

    def databases(self) -> list[Database]:
        """The databases this extension owns, for their health."""
        return []


class Extensions:
    """The extensions of one node, started in order and stopped in reverse, each kept from the others' faults."""

    def __init__(self, extensions: list[Extension]) -> None:
        self.all = extensions
        self.failures: Counter[str] = Counter()  # calls that raised, per extension
        self.rejected = 0  # messages the bus dropped before delivery: not of the contract
        self._filters = {extension.name: extension.filters() for extension in extensions}

    def get(self, kind: type[E]) -> E | None:
        return next((extension for extension in self.all if isinstance(extension, kind)), None)

    def filters(self) -> list[str]:
        return sorted({f for filters in self._filters.values() for f in filters})

    def write_errors(self) -> dict[str, int]:
        """Writes that failed, per database file, ever."""
        return {db.name: db.write_errors for extension in self.all for db in extension.databases()}

    async def start(self) -> None:
        for extension in self.all:
            await self._guarded(extension, extension.start(), "start call")

    async def stop(self) -> None:
        for extension in reversed(self.all):
            await self._guarded(extension, extension.stop(), "stop call")

    async def deliver(self, topic: str, message: Message) -> None:
        for extension in self.all:
            if any(filter_within(topic, f) for f in self._filters[extension.name]):
                farm = message.farm_id if isinstance(message, FarmMessage) else "-"
                await self._guarded(extension, extension.on_message(message), f"message of farm {farm} on {topic}")

    async def connected(self, publish: ConnectionPublish) -> None:
        for extension in self.all:
            await self._guarded(extension, extension.on_connected(publish), "connect")

    async def disconnected(self) -> None:
        for extension in self.all:
            await self._guarded(extension, extension.on_disconnected(), "disconnect")

    async def commit(self) -> bool:
        """Commit every extension's writes; False when one failed (its messages must not be acknowledged)."""
        results = [await self._guarded(extension, extension.commit(), "commit call") for extension in self.all]
        return all(results)

    async def _guarded(self, extension: Extension, call: Awaitable[None], what: str) -> bool:
        try:
            await call
        except Exception:  # one extension's fault must not stop the node or the other extensions
            self.failures[extension.name] += 1
            log.exception("extension %s failed on a %s", extension.name, what)
            return False
        return True
