"""``kubmesh farm-agent`` composed: the site (its houses, buses and schedules) and the local HTTP API."""

from __future__ import annotations

import asyncio
import logging

from farm_agent.extensions import EXTENSIONS
from farm_agent.http_api import create_api
from farm_agent.profile import load_profile
from farm_agent.settings import AgentSettings
from farm_agent.site import Site

log = logging.getLogger("kubmesh.agent")


async def run_agent(settings: AgentSettings, stop: asyncio.Event) -> None:
    profile = load_profile(settings.profile)
    site = Site(settings, profile, EXTENSIONS)
    api = create_api(site)
    await api.start(settings.api_host, settings.api_port)
    log.info(
        "%s: agent on http://%s:%s, controllers %s, broker %s",
        f"site {settings.site}" if settings.site else f"farm {site.houses[0].farm_id}",
        settings.api_host, settings.api_port, site.describe(), settings.mqtt().redacted(),
    )
    try:
        await site.run(stop)
    finally:
        await api.close()
