"""Extension: the tailnet's devices matched to the node's farms (:class:`TailscaleManager`), synced on its own
timer by the node that holds the storage's lease; on when a Tailscale API key is set or the tailscale CLI is
installed (``TAILSCALE_SYNC``)."""

from __future__ import annotations

import asyncio

from discovery.extension import Extension, Node
from discovery.presence import Presence
from discovery.registry import Registry
from discovery.storage import Database, Lease, SoleNode
from discovery.tailscale.manager import TailscaleManager, build_manager, known_farms
from discovery.tailscale.store import FILE, SCHEMA, TailnetStore


class Tailnet(Extension):
    name = "tailnet"

    def __init__(self, manager: TailscaleManager, lease: Lease | None = None, standby_s: float = 5.0) -> None:
        self.manager = manager
        self.lease = lease or SoleNode()
        self.standby_s = standby_s
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

        store = TailnetStore(node.storage.database(FILE, SCHEMA))
        return cls(build_manager(node.settings, farm_ids, node.clock, store), node.lease,
                   node.settings.lease_interval)

    async def start(self) -> None:
        self.manager.store.db.open()
        await self.manager.load()
        # one node syncs (the lease holder); the others read what it wrote
        self._task = asyncio.create_task(self.manager.run(self._stop, lambda: self.lease.held, self.standby_s))

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
        self.manager.store.db.close()

    def databases(self) -> list[Database]:
        return [self.manager.store.db]
