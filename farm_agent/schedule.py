"""The poll schedule of one bus: every controller on a link polled in turn, once per poll interval.

A bus has one master, so its controllers are polled one after another, never at once. A unit that
does not answer costs one timeout per cycle (its first request fails and its poll ends), so it
delays the others by at most its own timeout. A command's write takes the bus before the next poll's
read (:class:`~farm_agent.link.Priority`), and a house that asks to be polled at once (after a
command) is polled between two turns of the cycle. Each cycle is measured against its wire-time
bound — what its frames take on the line at the link's baud rate — and a cycle longer than the poll
interval is an overrun, said in the log and in every house's heartbeat: polls then follow each other
back to back, as fast as the bus allows, rather than drift silently.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from farm_agent.link import ModbusBus

if TYPE_CHECKING:
    from farm_agent.agent import FarmAgent

log = logging.getLogger("kubmesh.agent.schedule")


@dataclass(frozen=True)
class BusCycle:
    """One pass over every controller of a bus."""

    seconds: float  # how long it took
    wire_s: float  # what its requests and replies take on the line: no cycle can be shorter
    units: int
    overrun: bool  # longer than the poll interval


class BusScheduler:
    def __init__(self, bus: ModbusBus, houses: Sequence[FarmAgent], interval: float) -> None:
        self.bus = bus
        self.houses = list(houses)
        self.interval = interval
        self.cycles = 0
        self.last: BusCycle | None = None

    async def run(self, stop: asyncio.Event) -> None:
        next_at = time.monotonic()
        while not stop.is_set():
            self._finished(await self._cycle())
            next_at += self.interval
            now = time.monotonic()
            if next_at < now:  # an overrun: the next cycle at once, not a burst of the missed ones
                next_at = now
            await self._idle_until(next_at, stop)

    async def _cycle(self) -> BusCycle:
        started, wire_before = time.monotonic(), self.bus.counters.wire_s
        for house in self.houses:
            house.poll_requested.clear()
            await _poll(house)
        seconds = time.monotonic() - started
        return BusCycle(seconds, self.bus.counters.wire_s - wire_before, len(self.houses), seconds > self.interval)

    async def _idle_until(self, moment: float, stop: asyncio.Event) -> None:
        """Wait for the next cycle, polling at once any house that asks for it meanwhile."""
        while not stop.is_set() and (left := moment - time.monotonic()) > 0:
            waiters = [asyncio.ensure_future(stop.wait()),
                       *(asyncio.ensure_future(house.poll_requested.wait()) for house in self.houses)]
            try:
                await asyncio.wait(waiters, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
            for house in self.houses:
                if house.poll_requested.is_set() and not stop.is_set():
                    house.poll_requested.clear()
                    await _poll(house)

    def _finished(self, cycle: BusCycle) -> None:
        before, self.last = self.last, cycle
        self.cycles += 1
        if cycle.overrun and (before is None or not before.overrun):
            log.warning("bus %s: a poll cycle of %d unit(s) took %.2f s (%.2f s on the wire), longer than the poll "
                        "interval of %g s: polls come late", self.bus.url.link, cycle.units, cycle.seconds,
                        cycle.wire_s, self.interval)
        elif not cycle.overrun and before is not None and before.overrun:
            log.info("bus %s: poll cycles fit the poll interval again (%.2f s)", self.bus.url.link, cycle.seconds)
        for house in self.houses:
            house.cycled(cycle)


async def _poll(house: FarmAgent) -> None:
    try:
        await house.poll_once()
    except Exception:  # a fault no one foresaw must not end polling for good, nor the other houses' polls
        house.state.polls_failed += 1
        log.exception("farm %s: poll failed", house.farm_id)
