"""Readings from the queue to the broker: the newest live on ``state``, the unconfirmed ones on ``backlog``.

A reading is encoded once, when it is queued; the bytes that wait in the queue are the bytes
published. It leaves the queue when the history confirms it (:meth:`Reporter.confirm`, from the
discovery node's committed mark), not on its PUBACK. Live readings go out on ``state`` at once,
whether or not the discovery node is there (the web and Home Assistant read them). The rest of the
queue is sent on ``backlog``, oldest first, at a bounded rate beside the live readings, and only while
the discovery node says it is ``online`` (its subscriptions are then in place, so the broker has
someone to hand them to), as a Sparkplug B edge node waits for its primary host.

What was sent is sent again, from the oldest unconfirmed reading, when the session reconnects, when
the discovery node comes back online, and when no confirmation has come for ``confirm_timeout``
seconds while readings wait for one. The history stores a reading sent twice once (by farm and seq).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import aiomqtt

from contract.topics import Topics
from farm_agent.publisher import Publisher
from farm_agent.queue import Queued, ReadingQueue

log = logging.getLogger("kubmesh.agent")

IDLE_CHECK_S = 1.0  # how often an idle replay looks at the clock for the confirmation timeout


class Reporter:
    def __init__(self, publisher: Publisher, queue: ReadingQueue, topics: Topics, farm_id: str,
                 replay_rate: float, replay_window: int, confirm_timeout: float = 30.0) -> None:
        self.publisher = publisher
        self.queue = queue
        self.farm_id = farm_id
        self.state_topic = topics.state(farm_id)
        self.backlog_topic = topics.backlog(farm_id)
        self.replay_rate = replay_rate
        self.replay_window = replay_window
        self.confirm_timeout = confirm_timeout
        self.discovery_online = asyncio.Event()
        self.mark = 0  # the newest committed mark received
        self.resends = 0  # times the unconfirmed readings were sent again after the timeout
        self._cursor = 0  # readings up to this seq were sent since the last start over
        self._live: set[int] = set()  # sent on ``state`` while discovery was online, not yet confirmed
        self._waiting_since = time.monotonic()  # the last confirmation, or the last start over
        self._wake = asyncio.Event()

    async def send_live(self, queued: Queued) -> None:
        online = self.discovery_online.is_set()
        if await self.publisher.publish(self.state_topic, queued.payload, retain=True) and online:
            if not self._in_flight():
                self._waiting_since = time.monotonic()
            self._live.add(queued.seq)  # the history has it from ``state``: no need to send it again on backlog
        self._wake.set()

    def confirm(self, seq: int) -> None:
        """The history's committed mark: every reading up to ``seq`` is stored."""
        if seq > self.mark:
            self.mark = seq
        if self.queue.confirm(seq):
            self._waiting_since = time.monotonic()
        self._live = {live for live in self._live if live > seq}
        self._wake.set()

    def discovery(self, online: bool) -> None:
        """The discovery node said ``online`` or ``offline`` (or the session to the broker ended)."""
        if online and not self.discovery_online.is_set():
            self._start_over()  # what went out while it was away may not have reached its history
            self.discovery_online.set()
        elif not online:
            self.discovery_online.clear()
        self._wake.set()

    def disconnected(self) -> None:
        """The session ended: nothing is known of the discovery node until its status comes again."""
        self.discovery(False)
        self._start_over()

    async def replay(self, client: aiomqtt.Client) -> None:
        """Send the unconfirmed readings on ``backlog``, oldest first, while the discovery node is online.

        A window of readings is in flight at a time, and the pace is capped at ``replay_rate`` per
        second, so live readings, published beside it, keep their pace through the broker. It never
        returns: the session's other loops decide when it ends.
        """
        started, sent = time.monotonic(), 0
        while True:
            self._wake.clear()  # before looking at the queue: what comes after wakes the idle wait
            await self.discovery_online.wait()
            if self._timed_out():
                self.resends += 1
                log.warning("farm %s: no confirmation from the history for %.0f s: sending the %d unconfirmed "
                            "reading(s) again", self.farm_id, self.confirm_timeout, len(self.queue))
                self._start_over()
            batch = self.queue.oldest(self.queue.next_seq, self.replay_window, after=self._cursor)
            payloads = [queued.payload for queued in batch if queued.seq not in self._live]
            if not batch:
                if sent:
                    log.info("farm %s: replayed %d backlog reading(s) in %.1f s", self.farm_id, sent,
                             time.monotonic() - started)
                sent = 0
                await self._idle()
                started = time.monotonic()
                continue
            if payloads and not self._in_flight():
                self._waiting_since = time.monotonic()
            self._cursor = batch[-1].seq
            if payloads:
                await self.publisher.publish_window(client, self.backlog_topic, payloads)
            sent += len(payloads)
            if self.replay_rate > 0:
                await asyncio.sleep(max(0.0, started + sent / self.replay_rate - time.monotonic()))

    def _start_over(self) -> None:
        self._cursor = 0
        self._live.clear()
        self._waiting_since = time.monotonic()

    def _in_flight(self) -> bool:
        """Readings were sent and wait for their confirmation."""
        return bool(self._live) or self.queue.held_from <= self._cursor

    def _timed_out(self) -> bool:
        return self._in_flight() and time.monotonic() - self._waiting_since > self.confirm_timeout

    async def _idle(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), IDLE_CHECK_S)
