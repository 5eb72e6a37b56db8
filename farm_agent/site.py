"""A site: the houses one agent serves, their buses, and a poll schedule per bus.

Each house (:class:`~farm_agent.agent.FarmAgent`) has its own store and queue, its own MQTT session
with its own last will, its own extensions and commands; what houses share is the bus their
controllers hang on (:class:`~farm_agent.link.ModbusBus`, one master per link) and its
:class:`~farm_agent.schedule.BusScheduler`. Controllers with the same link (the same serial port,
or the same converter's host and port) share one bus; a controller with its own ``url`` has its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from contract.payloads import Clock, utc_now
from farm_agent.agent import FarmAgent
from farm_agent.extension import Extension
from farm_agent.link import ModbusBus, ModbusUrl
from farm_agent.poller import Poller
from farm_agent.profile import Profile
from farm_agent.queue import ReadingQueue
from farm_agent.schedule import BusScheduler
from farm_agent.settings import AgentSettings
from farm_agent.store import AgentStore

log = logging.getLogger("kubmesh.agent")


class Site:
    def __init__(self, settings: AgentSettings, profile: Profile, extensions: Sequence[type[Extension]],
                 clock: Clock = utc_now) -> None:
        self.settings = settings
        self.name = settings.site
        self.buses: dict[str, ModbusBus] = {}
        self.houses: list[FarmAgent] = []
        self._stores: list[AgentStore] = []
        for house in settings.houses():
            url = ModbusUrl.parse(house.modbus_url, profile.link)
            bus = self.buses.setdefault(url.link, ModbusBus(url))
            store = AgentStore(settings.data_dir / f"agent-{house.house_id}.db")
            self._stores.append(store)
            queue = ReadingQueue(store, house.queue_max_readings, house.queue_max_age, clock,
                                 max_memory=house.queue_max_memory_readings)
            poller = Poller(profile, bus.unit(url.unit),
                            plan_file=settings.data_dir / f"agent-{house.house_id}.plan.json")
            self.houses.append(FarmAgent(house, profile, poller, queue, extensions, clock=clock))
        for house_agent in self.houses:
            house_agent.site_houses = tuple(h.farm_id for h in self.houses)
        self.schedulers = [
            BusScheduler(bus, [h for h in self.houses if h.poller.link.bus is bus], settings.poll_interval)
            for bus in self.buses.values()
        ]

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await asyncio.gather(*(house.run(stop) for house in self.houses),
                                 *(scheduler.run(stop) for scheduler in self.schedulers))
        finally:
            for bus in self.buses.values():
                bus.close()
            for store in self._stores:
                store.close()

    def describe(self) -> str:
        return "; ".join(
            f"{bus.url.link}: " + ", ".join(f"{h.farm_id} (unit {h.poller.link.url.unit})" for h in scheduler.houses)
            for bus, scheduler in zip(self.buses.values(), self.schedulers, strict=True)
        )
