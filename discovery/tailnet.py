"""Extension: the tailnet's devices matched to the node's farms (:class:`TailscaleManager`), synced on its own
timer; on when a Tailscale API key is set or the tailscale CLI is installed (``TAILSCALE_SYNC``)."""

from __future__ import annotations

import asyncio

from discovery.extension import Extension, Node
from discovery.presence import Presence
from discovery.registry import Registry
from discovery.sqlite import Database
from discovery.tailscale.manager import TailscaleManager, build_manager, known_farms


class Tailnet(Extension):
    name = "tailnet"

    def __init__(self, manager: TailscaleManager) -> None:
        self.manager = manager
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def build(cls, node: Node) -> Tailnet | None:
        if not node.settings.tailscale_enabled:
            return None

        def farm_ids() -> set[str]:
            presence = node.extensions.get(Presence)
            registry: Registry | None = presence.registry if presence else None
            return known_farms(registry, node.identities)

        return cls(build_manager(node.settings, farm_ids, node.clock))

    async def start(self) -> None:
        self.manager.store.db.open()
        await self.manager.load()
        self._task = asyncio.create_task(self.manager.run(self._stop))

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
        self.manager.store.db.close()

    def databases(self) -> list[Database]:
        return [self.manager.store.db]
