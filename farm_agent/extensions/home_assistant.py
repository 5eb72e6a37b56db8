"""Home Assistant discovery: the farm's device config (:mod:`farm_agent.homeassistant`) after every ``meta``,
and everything again when Home Assistant announces itself ``online`` on its status topic."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Sequence

from contract.payloads import Meta
from contract.topics import ha_status_topic
from farm_agent import homeassistant
from farm_agent.agent import AGENT_VERSION
from farm_agent.extension import Extension, Inbound
from farm_agent.settings import AgentSettings


class HomeAssistant(Extension):
    name = "homeassistant"

    @classmethod
    def enabled(cls, settings: AgentSettings) -> bool:
        return settings.ha_discovery

    def subscriptions(self) -> Sequence[str]:
        return (ha_status_topic(self.agent.settings.ha_prefix),)

    async def on_meta(self, meta: Meta) -> None:
        await self._publish_config()

    async def on_message(self, message: Inbound) -> None:
        if message.payload == b"online":
            self.spawn(self._announce_again(), "announce")

    async def _announce_again(self) -> None:
        """HA restarted: configs again after a short random delay (a fleet must not burst), then states."""
        await asyncio.sleep(random.uniform(0, 3))
        await self._publish_config()
        await self.agent.republish_retained()

    async def _publish_config(self) -> None:
        agent, settings = self.agent, self.agent.settings
        first = agent.site_houses[0]
        in_a_site = bool(settings.site) and len(agent.site_houses) > 1
        if in_a_site and agent.farm_id == first:
            site = homeassistant.site_config(agent.topics, first, settings.site or first, AGENT_VERSION,
                                             settings.ha_language)
            await agent.publisher.publish(homeassistant.site_config_topic(settings.ha_prefix, first),
                                          json.dumps(site, ensure_ascii=False).encode(), retain=True)
        config = homeassistant.device_config(
            agent.profile, agent.topics, agent.farm_id, farm_name=settings.farm_name or agent.farm_id,
            firmware=agent.state.firmware, location=settings.location, agent_version=AGENT_VERSION,
            language=settings.ha_language, web_url=settings.ha_web_url,
            via_device=homeassistant.site_node_id(first) if in_a_site else None,
        )
        await agent.publisher.publish(homeassistant.config_topic(settings.ha_prefix, agent.farm_id),
                                      json.dumps(config, ensure_ascii=False).encode(), retain=True)
