"""Plug-in: the registry and presence of farms, from their status, meta, heartbeat, state and alarms."""

from __future__ import annotations

import logging
from collections.abc import Callable

from contract.payloads import Alarms, Clock, Heartbeat, Meta, PayloadError, Reading, Status, decode
from contract.topics import FarmTopic, InvalidTopic, Topics
from discovery.registry import Registry

log = logging.getLogger("kubmesh.discovery.presence")

MODELS: dict[FarmTopic, type[Status | Meta | Heartbeat | Reading | Alarms]] = {
    FarmTopic.STATUS: Status,
    FarmTopic.META: Meta,
    FarmTopic.HEARTBEAT: Heartbeat,
    FarmTopic.STATE: Reading,
    FarmTopic.ALARMS: Alarms,
}
RECORDERS: dict[FarmTopic, Callable[..., None]] = {
    FarmTopic.STATUS: Registry.record_status,
    FarmTopic.META: Registry.record_meta,
    FarmTopic.HEARTBEAT: Registry.record_heartbeat,
    FarmTopic.STATE: Registry.record_state,
    FarmTopic.ALARMS: Registry.record_alarms,
}
KINDS = tuple(MODELS)


class PresencePlugin:
    def __init__(self, registry: Registry, topics: Topics, clock: Clock) -> None:
        self.registry = registry
        self.topics = topics
        self.clock = clock
        self.dropped = 0

    def subscriptions(self) -> list[str]:
        return [self.topics.all_farms(kind) for kind in KINDS]

    async def on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        try:
            parsed = self.topics.parse(topic)
        except InvalidTopic as exc:
            self.dropped += 1
            log.warning("dropped a message: %s", exc)
            return
        if not payload:
            return  # a retained message being cleared
        farm_id, kind = parsed.farm_id, parsed.kind
        try:
            message = decode(MODELS[kind], payload)
        except PayloadError as exc:
            self.dropped += 1
            log.warning("farm %s: dropped a %s message: %s", farm_id, kind.value, exc)
            return
        # a retained message delivered on subscribe is old news: the farm was last seen when it was sent
        seen = message.ts if retained else self.clock()
        RECORDERS[kind](self.registry, farm_id, message, seen)
