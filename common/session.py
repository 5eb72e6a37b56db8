"""One reconnecting MQTT session, the loop every component runs instead of writing its own.

``MqttSession.run(stop, serve)`` connects, hands the connected client to ``serve`` and, when the
connection breaks (``serve`` raises ``MqttError`` or returns before ``stop``), reconnects with a
backoff that doubles from 1 s up to ``reconnect_max``. It returns only once ``stop`` is set. Every
break is logged once, with the broker's redacted URL and what the session is for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import aiomqtt

from common.mqtt import LastWill, MqttUrl, async_client

log = logging.getLogger("kubmesh.mqtt")

Serve = Callable[[aiomqtt.Client], Awaitable[None]]


class MqttSession:
    def __init__(
        self,
        url: MqttUrl,
        client_id: str,
        *,
        purpose: str,
        will: LastWill | None = None,
        keepalive: int = 30,
        clean_session: bool = True,
        manual_ack: bool = False,
        reconnect_max: float = 30.0,
    ) -> None:
        self.url = url
        self.client_id = client_id
        self.purpose = purpose
        self.will = will
        self.keepalive = keepalive
        self.clean_session = clean_session
        self.manual_ack = manual_ack
        self.reconnect_max = reconnect_max
        self.connected = False
        self.connects = 0
        self.last_error: str | None = None

    async def run(self, stop: asyncio.Event, serve: Serve) -> None:
        """Serve every connection until ``stop`` is set; ``serve`` returns when ``stop`` is set."""
        delay = min(1.0, self.reconnect_max)
        while not stop.is_set():
            try:
                async with async_client(
                    self.url, self.client_id, will=self.will, keepalive=self.keepalive,
                    clean_session=self.clean_session, manual_ack=self.manual_ack,
                ) as client:
                    delay = min(1.0, self.reconnect_max)
                    self.connected = True
                    self.connects += 1
                    self.last_error = None
                    try:
                        await serve(client)
                    finally:
                        self.connected = False  # at once, not after the client's own clean-up
                    if stop.is_set():
                        return
                    raise aiomqtt.MqttError("the broker ended the session")
            except aiomqtt.MqttError as exc:
                self.last_error = str(exc)
                log.warning("%s: broker %s unreachable: %s; retrying in %.0f s",
                            self.purpose, self.url.redacted(), exc, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, self.reconnect_max)
