"""Running an asyncio service until Ctrl-C or SIGTERM, then stopping it cleanly with exit code 0."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable


def run_until_signalled(service: Callable[[asyncio.Event], Awaitable[None]]) -> int:
    """Run ``service(stop)``; SIGINT and SIGTERM set ``stop``, and the service returns on its own."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await service(stop)

    asyncio.run(main())
    return 0
