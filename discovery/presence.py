"""Extension: the farm registry and presence, from each farm's ``status``, ``meta``, ``heartbeat``, ``state``
and ``alarms``. It owns the registry database (``discovery.db``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from contract.messages import FarmMessage, Message
from contract.payloads import Clock
from contract.topics import FarmTopic, Topics
from discovery.extension import Extension, Node
from discovery.registry import FILE, SCHEMA, Registry
from discovery.storage import Database

RECORDERS: dict[FarmTopic, Callable[..., None]] = {
    FarmTopic.STATUS: Registry.record_status,
    FarmTopic.META: Registry.record_meta,
    FarmTopic.HEARTBEAT: Registry.record_heartbeat,
    FarmTopic.STATE: Registry.record_state,
    FarmTopic.ALARMS: Registry.record_alarms,
}


class Presence(Extension):
    name = "presence"

    def __init__(self, registry: Registry, topics: Topics, clock: Clock) -> None:
        self.registry = registry
        self.topics = topics
        self.clock = clock

    @classmethod
    def build(cls, node: Node) -> Presence:
        return cls(Registry(node.storage.database(FILE, SCHEMA)), node.topics, node.clock)

    def filters(self) -> list[str]:
        return [self.topics.all_farms(kind) for kind in RECORDERS]

    async def start(self) -> None:
        self.registry.db.open()

    async def stop(self) -> None:
        self.registry.db.close()

    def databases(self) -> list[Database]:
        return [self.registry.db]

    async def on_message(self, message: Message) -> None:
        if not isinstance(message, FarmMessage) or message.payload is None:
            return  # a retained message being cleared
        payload: Any = message.payload  # every model this extension asked for has a ts
        # a retained message delivered on subscribe is old news: the farm was last seen when it was sent
        seen = payload.ts if message.retained else self.clock()
        RECORDERS[message.kind](self.registry, message.farm_id, message.payload, seen)
