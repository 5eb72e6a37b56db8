"""``kubmesh farm-agent`` composed: profile, Modbus link, store, agent and its HTTP API."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from contract.payloads import utc_now
from farm_agent.agent import FarmAgent
from farm_agent.control import CommandHandler
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
    queue = ReadingQueue(store, settings.queue_max_readings, settings.queue_max_age, utc_now)
    poller = Poller(profile, link, plan_file=settings.data_dir / f"agent-{settings.farm_id}.plan.json")
    control = CommandHandler(profile, link, settings.data_dir / f"agent-{settings.farm_id}.commands.db",
                             clock=utc_now, max_age_s=settings.command_max_age)
    agent = FarmAgent(settings, profile, poller, queue, control)
    runner = web.AppRunner(create_api(agent), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.api_host, settings.api_port).start()
    log.info(
        "farm %s: agent on http://%s:%s, controller %s, broker %s",
        settings.farm_id, settings.api_host, settings.api_port, link.url, settings.mqtt().redacted(),
    )
    try:
        await agent.run(stop)
    finally:
        await runner.cleanup()
        control.close()
        store.close()
