"""``kubmesh farm-agent`` composed: profile, Modbus link, store and queue, the agent and its extensions, HTTP API."""

from __future__ import annotations

import asyncio
import logging

from contract.payloads import utc_now
from farm_agent.agent import FarmAgent
from farm_agent.extensions import EXTENSIONS
from farm_agent.http_api import create_api
from farm_agent.link import ModbusLink, ModbusUrl
from farm_agent.poller import Poller
from farm_agent.profile import load_profile
from farm_agent.queue import ReadingQueue
from farm_agent.settings import AgentSettings
from farm_agent.store import AgentStore

log = logging.getLogger("kubmesh.agent")


async def run_agent(settings: AgentSettings, stop: asyncio.Event) -> None:
    profile = load_profile(settings.profile)
    link = ModbusLink(ModbusUrl.parse(settings.modbus_url, profile.link))
    store = AgentStore(settings.data_dir / f"agent-{settings.farm_id}.db")
    queue = ReadingQueue(store, settings.queue_max_readings, settings.queue_max_age, utc_now,
                         max_memory=settings.queue_max_memory_readings)
    poller = Poller(profile, link, plan_file=settings.data_dir / f"agent-{settings.farm_id}.plan.json")
    agent = FarmAgent(settings, profile, poller, queue, EXTENSIONS)
    api = create_api(agent)
    await api.start(settings.api_host, settings.api_port)
    log.info(
        "farm %s: agent on http://%s:%s, controller %s, broker %s",
        settings.farm_id, settings.api_host, settings.api_port, link.url, settings.mqtt().redacted(),
    )
    try:
        await agent.run(stop)
    finally:
        await api.close()
        store.close()
