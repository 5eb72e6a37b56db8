"""Local receivers for the alerts' channels: an SMTP server (aiosmtpd) for ``mailto://``, and an HTTP
server for Apprise's ``json://``, ntfy's publish API and Web Push endpoints, each in its own thread, so
that tests in any process (the node under test, or the test itself) deliver to them over loopback."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from email.policy import default
from typing import Any

from aiohttp import web
from aiosmtpd.controller import Controller

from tests.helpers import free_port


@dataclass(frozen=True)
class Received:
    at: float  # time.monotonic() when it arrived
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class HttpReceiver:
    """Records every request; answers 200, or ``status`` to the next ``fail_next`` requests."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[Received] = []
        self.failing_status: int | None = None
        self.fail_next = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> HttpReceiver:
        self._thread.start()
        self._ready.wait(10)
        return self

    def url(self, scheme: str, path: str = "") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.fail_next > 0 or self.failing_status is not None:
            self.fail_next = max(0, self.fail_next - 1)
            return web.Response(status=self.failing_status or 500, text="failing on purpose")
        self.received.append(Received(time.monotonic(), request.path, dict(request.headers), body))
        return web.Response(status=201 if request.path.startswith("/push/") else 200, text="{}",
                            content_type="application/json")

    def on(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[tuple[float, Message]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((time.monotonic(), message_from_bytes(envelope.content, policy=default)))
        return "250 OK"


class SmtpReceiver:
    def __init__(self) -> None:
        self.port = free_port()
        self._mailbox = _Mailbox()
        self._controller = Controller(self._mailbox, hostname="127.0.0.1", port=self.port)

    def start(self) -> SmtpReceiver:
        self._controller.start()
        return self

    def url(self, to: str = "farmer@farm.test") -> str:
        return f"mailto://127.0.0.1:{self.port}?from=kubmesh@farm.test&to={to}"

    @property
    def messages(self) -> list[tuple[float, Message]]:
        return self._mailbox.messages

    def texts(self) -> list[str]:
        return [f"{m['Subject']}\n{_text(m)}" for _, m in self.messages]

    def stop(self) -> None:
        self._controller.stop()


def _text(message: Message) -> str:
    part = message.get_body(preferencelist=("plain", "html")) if message.is_multipart() else message
    return part.get_content() if part is not None else ""  # type: ignore[attr-defined]
