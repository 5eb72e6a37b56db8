"""Readings from the queue to the broker: the newest live on ``state``, the unacknowledged ones on ``backlog``.

A reading is encoded once, when it is queued; the bytes that wait in the queue are the bytes
published. It leaves the queue on its PUBACK. After a reconnect the newest reading goes out on
``state`` at once and the rest of the queue is replayed on ``backlog``, oldest first, at a bounded
rate beside the live readings.
"""

from __future__ import annotations

import asyncio
import logging
import time

import aiomqtt

from contract.topics import Topics
from farm_agent.publisher import Publisher
from farm_agent.queue import Queued, ReadingQueue

log = logging.getLogger("kubmesh.agent")


class Reporter:
    def __init__(self, publisher: Publisher, queue: ReadingQueue, topics: Topics, farm_id: str,
                 replay_rate: float, replay_window: int) -> None:
        self.publisher = publisher
        self.queue = queue
        self.farm_id = farm_id
        self.state_topic = topics.state(farm_id)
        self.backlog_topic = topics.backlog(farm_id)
        self.replay_rate = replay_rate
        self.replay_window = replay_window

    async def send_live(self, queued: Queued) -> None:
        if await self.publisher.publish(self.state_topic, queued.payload, retain=True):
            self.queue.remove([queued.seq])

    async def replay(self, client: aiomqtt.Client, below: int) -> None:
        """Send the queued readings numbered below ``below`` on ``backlog``, oldest first, then idle.

        A window of readings is in flight at a time, and the pace is capped at ``replay_rate`` per
        second, so live readings, published beside it, keep their pace through the broker.
        """
        started, sent = time.monotonic(), 0
        while batch := self.queue.oldest(below, self.replay_window):
            await self.publisher.publish_window(client, self.backlog_topic, [queued.payload for queued in batch])
            self.queue.remove([queued.seq for queued in batch])
            sent += len(batch)
            if self.replay_rate > 0:
                await asyncio.sleep(max(0.0, started + sent / self.replay_rate - time.monotonic()))
        if sent:
            log.info("farm %s: replayed %d backlog reading(s) in %.1f s", self.farm_id, sent,
                     time.monotonic() - started)
        await asyncio.Event().wait()  # the session's other loops decide when it ends
