"""The discovery node's one MQTT session, shared by its plug-ins.

It keeps ``{base}/discovery/status`` retained ``online`` while connected (its
last will says ``offline``; a broker that restarted empty gets it again on the
reconnect), subscribes to what each plug-in asks for, and hands every message
to the plug-ins that asked. It reconnects with backoff and never exits on a
broker fault.

The session is persistent (a fixed client id, clean session off, QoS 1
subscriptions): while the node restarts, an external broker queues the
readings for it. A message is acknowledged only after the plug-ins that buffer
writes (:class:`Buffering`) have committed it, a batch at a time, so a node
killed mid-batch gets the unacknowledged messages again from the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol, runtime_checkable

import aiomqtt

from common.mqtt import LastWill, MqttUrl, acknowledge, async_client
from common.runtime import run_until_stopped
from contract.topics import Topics, filter_within

log = logging.getLogger("kubmesh.discovery")
CLIENT_ID = "kubmesh-discovery"
COMMIT_INTERVAL_S = 0.25
COMMIT_BATCH = 500


class Plugin(Protocol):
    def subscriptions(self) -> list[str]: ...

    async def on_message(self, topic: str, payload: bytes, retained: bool) -> None: ...


@runtime_checkable
class Buffering(Protocol):
    """A plug-in that keeps messages in memory before writing them; ``flush`` commits them."""

    def flush(self) -> None: ...


class DiscoveryBus:
    def __init__(self, url: MqttUrl, topics: Topics, plugins: list[Plugin], keepalive: int = 30,
                 reconnect_max: float = 30.0) -> None:
        self.url = url
        self.reconnect_max = reconnect_max
        self._unacked: list[tuple[int, int]] = []  # (mid, qos) of messages handled but not yet committed
        self.topics = topics
        self.plugins = plugins
        self._buffering = [plugin for plugin in plugins if isinstance(plugin, Buffering)]
        self.keepalive = keepalive
        self.connected = False

    async def run(self, stop: asyncio.Event) -> None:
        will = LastWill(self.topics.discovery_status(), b"offline")
        delay = min(1.0, self.reconnect_max)
        while not stop.is_set():
            try:
                async with async_client(self.url, CLIENT_ID, will=will, keepalive=self.keepalive,
                                        clean_session=False, manual_ack=True) as client:
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
        self._unacked.clear()  # message ids belong to a connection; the broker resends what we did not ack
        await client.publish(self.topics.discovery_status(), b"online", qos=1, retain=True)
        filters = sorted({f for plugin in self.plugins for f in plugin.subscriptions()})
        if filters:
            await client.subscribe([(f, 1) for f in filters])
        self.connected = True
        log.info("connected to the broker %s", self.url.redacted())
        # returns on stop; a broken connection raises MqttError here, and run() reconnects
        if not await run_until_stopped(stop, self._dispatch(client), self._commit_every(client)):
            raise aiomqtt.MqttError("the broker ended the session")
        self._commit(client)
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
            if message.qos > 0:
                self._unacked.append((message.mid, message.qos))
                if len(self._unacked) >= COMMIT_BATCH:
                    self._commit(client)

    async def _commit_every(self, client: aiomqtt.Client) -> None:
        while True:
            await asyncio.sleep(COMMIT_INTERVAL_S)
            self._commit(client)

    def _commit(self, client: aiomqtt.Client) -> None:
        """Write what the plug-ins buffer, then acknowledge the messages it came from, in order."""
        if not self._unacked:
            return
        for plugin in self._buffering:
            plugin.flush()
        for mid, qos in self._unacked:
            acknowledge(client, mid, qos)
        self._unacked.clear()
