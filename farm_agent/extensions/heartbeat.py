"""``heartbeat`` (retained): every ``HEARTBEAT_INTERVAL`` while connected, and at once when the link or disk changes."""

from __future__ import annotations

import asyncio

from farm_agent.extension import Extension, HealthChange


class Heartbeats(Extension):
    name = "heartbeat"

    _beating: asyncio.Task[None] | None = None

    async def on_connected(self) -> None:
        # one loop per connection: the previous one ended with its session
        self._beating = self.spawn(self._beat(), "beat")

    async def on_disconnected(self) -> None:
        if self._beating is not None:
            self._beating.cancel()
            self._beating = None

    async def on_health(self, change: HealthChange) -> None:
        self.agent.publisher.soon(self.agent.publish_heartbeat())

    async def _beat(self) -> None:
        while True:
            await self.agent.publish_heartbeat()
            await asyncio.sleep(self.agent.settings.heartbeat_interval)
