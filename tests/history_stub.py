"""A stand-in for the discovery node's history endpoint, for the mobile web's tests.

It answers ``GET /api/farms/{farm}/history?name=&from=&to=&step=`` with ``Authorization: Bearer
TOKEN`` exactly as the discovery REST API's contract says (``{"farm", "name", "points": [{"ts",
"value", "min", "max", "avg"}]}``, ``value`` the bucket average), from made-up readings, and
records each request so tests can check what the mobile web asked. It runs aiohttp (the discovery
node's own server library) on its own event loop in a thread.
"""

from __future__ import annotations

import asyncio
import math
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from broker.payloads import format_ts, parse_ts
from tests.helpers import free_port


@dataclass
class HistoryStub:
    token: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HistoryStub:
        self.port = free_port()
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def serve() -> None:
            app = web.Application()
            app.router.add_get("/api/farms/{farm}/history", self._history)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
            ready.set()

        def run() -> None:
            assert self._loop is not None
            self._loop.run_until_complete(serve())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is None or self._runner is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    async def _history(self, request: web.Request) -> web.Response:
        self.requests.append({"farm": request.match_info["farm"], "query": dict(request.query),
                              "authorization": request.headers.get("Authorization")})
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"error": "unauthorized"}, status=401)
        try:
            start, end = parse_ts(request.query["from"]), parse_ts(request.query["to"])
            step = int(request.query.get("step", "300"))
        except (KeyError, ValueError):
            return web.json_response({"error": "bad request"}, status=400)
        return web.json_response({"farm": request.match_info["farm"], "name": request.query.get("name", ""),
                                  "points": made_up_points(start, end, step)})


def made_up_points(start: datetime, end: datetime, step: int) -> list[dict[str, Any]]:
    """A daily wave around 22 °C, one bucket per ``step`` seconds."""
    points = []
    moment = start.astimezone(UTC)
    while moment < end:
        hour = moment.hour + moment.minute / 60
        average = round(22 + 2 * math.sin(hour / 24 * 2 * math.pi), 2)
        points.append({"ts": format_ts(moment), "value": average, "min": round(average - 0.4, 2),
                       "max": round(average + 0.4, 2), "avg": average})
        moment += timedelta(seconds=step)
    return points
