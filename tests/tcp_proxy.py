"""A loopback TCP proxy that can fail the way rural links fail, for fault tests.

- ``stall()``: the link goes silent without closing: both ends keep their sockets, every byte
  sent is lost. Only keepalive notices this half-open case. Connections made while stalled
  hang the same way; a stalled connection never forwards again (its stream has a hole).
- ``cut()``: every connection is reset and new ones are refused at once.
- ``restore()``: new connections are forwarded again.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.helpers import free_port


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    alive: bool = True

    def close(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.close()


@dataclass
class TcpProxy:
    target_port: int
    port: int = field(default_factory=free_port)
    mode: str = "forward"  # forward, stall or cut

    def __post_init__(self) -> None:
        self.bytes_up = 0  # forwarded from clients to the target
        self.bytes_down = 0  # forwarded from the target to clients
        self._links: set[_Link] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._server: asyncio.Server | None = None

    def start(self) -> TcpProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._accept, "127.0.0.1", self.port), self._loop).result(5)
        return self

    def stall(self) -> None:
        self._call(self._stall)

    def cut(self) -> None:
        self._call(self._cut)

    def restore(self) -> None:
        self._call(lambda: setattr(self, "mode", "forward"))

    def close(self) -> None:
        def shutdown() -> None:
            self._cut()
            if self._server is not None:
                self._server.close()

        self._call(shutdown)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _call(self, action: Callable[[], None]) -> None:
        async def run() -> None:
            action()

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(5)

    def _stall(self) -> None:
        self.mode = "stall"
        for link in self._links:
            link.alive = False

    def _cut(self) -> None:
        self.mode = "cut"
        for link in list(self._links):
            link.close()
        self._links.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "cut":
            writer.close()
            return
        link = _Link(writer, alive=self.mode == "forward")
        self._links.add(link)
        try:
            if not link.alive:
                await self._swallow(reader, link)
                return
            try:
                up_reader, link.upstream = await asyncio.open_connection("127.0.0.1", self.target_port)
            except OSError:
                return
            await asyncio.gather(self._pump(reader, link.upstream, link, up=True),
                                 self._pump(up_reader, writer, link, up=False))
        finally:
            self._links.discard(link)
            link.close()

    async def _pump(self, source: asyncio.StreamReader, target: asyncio.StreamWriter, link: _Link, up: bool) -> None:
        with contextlib.suppress(OSError):
            while data := await source.read(65536):
                if link.alive:
                    if up:
                        self.bytes_up += len(data)
                    else:
                        self.bytes_down += len(data)
                    target.write(data)
                    await target.drain()
        if link.alive:
            link.close()  # one side closed: close the other, as a real connection would
        # a stalled link carries no FIN either: the other end finds out by its own keepalive

    async def _swallow(self, reader: asyncio.StreamReader, link: _Link) -> None:
        with contextlib.suppress(OSError):
            while await reader.read(65536):
                pass
