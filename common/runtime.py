"""Running an asyncio service until Ctrl-C or SIGTERM, then stopping it cleanly with exit code 0."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any


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


async def run_until_stopped(stop: asyncio.Event, *loops: Coroutine[Any, Any, None]) -> bool:
    """Run ``loops`` until ``stop`` is set (True) or one of them ends (False, or its exception is raised).

    The others are cancelled either way: a session's loops live and die together.
    """
    stopping = asyncio.ensure_future(stop.wait())
    tasks = [asyncio.ensure_future(loop) for loop in loops]
    try:
        done, _ = await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (stopping, *tasks):
            task.cancel()
        await asyncio.gather(stopping, *tasks, return_exceptions=True)
    for task in tasks:
        if task in done and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    return stopping in done
