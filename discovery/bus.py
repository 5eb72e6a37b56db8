"""The discovery node's one MQTT session, shared by its plug-ins.

It keeps ``{base}/discovery/status`` retained ``online`` while connected (its
last will says ``offline``; a broker that restarted empty gets it again on the
reconnect), subscribes to what each plug-in asks for, and hands every message
to the plug-ins that asked. It reconnects with backoff and never exits on a
broker fault.

The session is persistent (a fixed client id, clean session off, QoS 1
subscriptions): while the node restarts, an external broker queues the
readings for it, and the history loses none of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

import aiomqtt

from broker.client import LastWill, MqttUrl, async_client
from broker.topics import Topics, filter_within
from kubmesh.runtime import run_until_stopped

log = logging.getLogger("kubmesh.discovery")
CLIENT_ID = "kubmesh-discovery"


class Plugin(Protocol):
    def subscriptions(self) -> list[str]: ...

    async def on_message(self, topic: str, payload: bytes, retained: bool) -> None: ...


class DiscoveryBus:
    def __init__(self, url: MqttUrl, topics: Topics, plugins: list[Plugin], keepalive: int = 30,
                 reconnect_max: float = 30.0) -> None:
        self.url = url
        self.reconnect_max = reconnect_max
        self.topics = topics
        self.plugins = plugins
        self.keepalive = keepalive
        self.connected = False

    async def run(self, stop: asyncio.Event) -> None:
        will = LastWill(self.topics.discovery_status(), b"offline")
        delay = min(1.0, self.reconnect_max)
        while not stop.is_set():
            try:
                async with async_client(self.url, CLIENT_ID, will=will, keepalive=self.keepalive,
                                        clean_session=False) as client:
                    delay = min(1.0, self.reconnect_max)
                    await self._serve(client, stop)
                    return
            except aiomqtt.MqttError as exc:
                self.connected = False
                log.warning("broker %s unreachable: %s; retrying in %.0f s", self.url.redacted(), exc, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, self.reconnect_max)

    async def _serve(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        await client.publish(self.topics.discovery_status(), b"online", qos=1, retain=True)
        filters = sorted({f for plugin in self.plugins for f in plugin.subscriptions()})
        if filters:
            await client.subscribe([(f, 1) for f in filters])
        self.connected = True
        log.info("connected to the broker %s", self.url.redacted())
        # returns on stop; a broken connection raises MqttError here, and run() reconnects
        if not await run_until_stopped(stop, self._dispatch(client)):
            raise aiomqtt.MqttError("the broker ended the session")
        await client.publish(self.topics.discovery_status(), b"offline", qos=1, retain=True)
        self.connected = False

    async def _dispatch(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            topic = message.topic.value
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            for plugin in self.plugins:
                if any(filter_within(topic, f) for f in plugin.subscriptions()):
                    try:
                        await plugin.on_message(topic, payload, bool(message.retain))
                    except Exception:  # one plug-in's bug must not stop the node
                        log.exception("plug-in %s failed on %s", type(plugin).__name__, topic)
