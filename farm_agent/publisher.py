"""The agent's one way out to the broker: QoS 1 publishes over the session's current client, in order.

Between connections there is no client and a publish returns False at once: what must not be lost
(readings) waits in the queue, the rest (heartbeats, events) is sent fresh after the next connect.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Sequence
from typing import Any

import aiomqtt

log = logging.getLogger("kubmesh.agent.publish")


class Publisher:
    def __init__(self, farm_id: str) -> None:
        self.farm_id = farm_id
        self.bytes_published = 0  # topic and payload bytes the broker acknowledged
        self._client: aiomqtt.Client | None = None
        self._lock = asyncio.Lock()
        self._sending: set[asyncio.Task[Any]] = set()  # publishes started by soon() and not waited for

    def attach(self, client: aiomqtt.Client) -> None:
        self._client = client

    def detach(self) -> None:
        self._client = None

    async def publish(self, topic: str, payload: bytes, retain: bool = False) -> bool:
        """True once the broker has acknowledged it; False when there is no session or it broke."""
        client = self._client
        if client is None:
            return False
        try:
            async with self._lock:
                await client.publish(topic, payload, qos=1, retain=retain)
        except aiomqtt.MqttError as exc:
            log.warning("farm %s: publish to %s failed: %s", self.farm_id, topic, exc)
            return False
        self.bytes_published += len(payload) + len(topic)
        return True

    async def publish_window(self, client: aiomqtt.Client, topic: str, payloads: Sequence[bytes]) -> None:
        """Several at once, in flight together beside the ordered publishes; a broken session raises MqttError."""
        await asyncio.gather(*(client.publish(topic, payload, qos=1) for payload in payloads))
        self.bytes_published += sum(len(payload) + len(topic) for payload in payloads)

    def soon(self, publish: Coroutine[Any, Any, object]) -> None:
        """Publish without holding up the caller: a half-open link may keep a PUBACK waiting for seconds.

        The lock is taken in the order the tasks start, so the order of messages is kept.
        """
        task = asyncio.create_task(publish)
        self._sending.add(task)
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[Any]) -> None:
        self._sending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("farm %s: a publish failed", self.farm_id, exc_info=task.exception())
