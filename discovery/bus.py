"""The discovery node's one MQTT session: each message decoded once, handed to the extensions that asked.

It keeps ``{base}/discovery/status`` retained ``online`` while connected (its last will says
``offline``; a broker that restarted empty gets it again on the reconnect). On every connection it first
subscribes to the filters of every extension — a broker that has no session for it (``session present``
0: it restarted without persistence, or expired the session) would otherwise send it nothing — then lets
the extensions publish (:meth:`~discovery.extension.Extension.on_connected`), and only then says
``online``: farms replay their backlog only to a node whose subscriptions are in place. It decodes each
message with :func:`contract.messages.decode_message` and delivers the typed message to the extensions
whose filters match. A message that is not of the contract is logged, counted (``Extensions.rejected``)
and acknowledged: sent again, it would be refused again.
:class:`common.session.MqttSession` reconnects it with backoff; it never exits on a broker fault.

The session is persistent (a fixed client id, clean session off, QoS 1 subscriptions): while the node
restarts, an external broker queues the readings for it. Several nodes on one broker each have a client id
of their own (``kubmesh-discovery-{NODE_NAME}``): two sessions with one id would take each other over. They
share the one retained status topic, which says whether the discovery service is there: a node that hears
``offline`` there (another node's last will, or its clean stop) while it is connected says ``online`` again,
so the topic says ``offline`` only when the last node is gone. A message is acknowledged only after every
extension's :meth:`~discovery.extension.Extension.commit` has returned (the history's writes are then
committed), a batch at a time, so a node killed mid-batch gets the unacknowledged messages again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiomqtt

from common.mqtt import LastWill, MqttUrl, acknowledge
from common.runtime import run_until_stopped
from common.session import MqttSession
from contract.messages import MessageError, decode_message
from contract.topics import Topics
from discovery.extension import Extensions

log = logging.getLogger("kubmesh.discovery")
CLIENT_ID = "kubmesh-discovery"


def client_id(node_name: str | None) -> str:
    """The node's MQTT client id: the one a single node has always had, or one per named node."""
    return f"{CLIENT_ID}-{node_name}" if node_name else CLIENT_ID
COMMIT_INTERVAL_S = 0.25
COMMIT_BATCH = 500


class DiscoveryBus:
    def __init__(self, url: MqttUrl, topics: Topics, extensions: Extensions, keepalive: int = 30,
                 reconnect_max: float = 30.0, node_name: str | None = None) -> None:
        self.topics = topics
        self.extensions = extensions
        self.session = MqttSession(url, client_id(node_name), purpose="discovery bus", keepalive=keepalive,
                                   will=LastWill(topics.discovery_status(), b"offline"), clean_session=False,
                                   manual_ack=True, reconnect_max=reconnect_max)
        self._unacked: list[tuple[int, int]] = []  # (mid, qos) of messages delivered but not yet committed
        self._batch_full = asyncio.Event()
        self._client: aiomqtt.Client | None = None

    @property
    def connected(self) -> bool:
        return self.session.connected

    async def run(self, stop: asyncio.Event) -> None:
        await self.session.run(stop, lambda client: self._serve(client, stop))

    async def publish(self, topic: str, payload: bytes) -> None:
        """Publish retained (QoS 1) on the node's session; raises MqttError while it is not connected."""
        if self._client is None or not self.connected:
            raise aiomqtt.MqttError("not connected")
        await self._client.publish(topic, payload, qos=1, retain=True)

    async def _serve(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        self._client = client
        self._unacked.clear()  # message ids belong to a connection; the broker resends what we did not ack
        # every time, before saying online: subscribing again where the session kept them changes nothing
        filters = sorted({*self.extensions.filters(), self.topics.discovery_status()})
        await client.subscribe([(f, 1) for f in filters])

        async def publish(topic: str, payload: bytes, *, qos: int, retain: bool) -> None:
            await client.publish(topic, payload, qos=qos, retain=retain)

        try:
            await self.extensions.connected(publish)
            await client.publish(self.topics.discovery_status(), b"online", qos=1, retain=True)
            log.info("connected to the broker %s, subscribed: online", self.session.url.redacted())
            # returns on stop; a broken connection raises MqttError here, and the session reconnects
            if await run_until_stopped(stop, self._dispatch(client), self._commit_every(client)):
                await self._commit(client)
                await client.publish(self.topics.discovery_status(), b"offline", qos=1, retain=True)
        finally:
            await self.extensions.disconnected()

    async def _dispatch(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            if message.topic.value == self.topics.discovery_status() and payload == b"offline":
                # another node stopped or died: this one is still here
                await client.publish(self.topics.discovery_status(), b"online", qos=1, retain=True)
            await self.handle(message.topic.value, payload, bool(message.retain))
            if message.qos > 0:
                self._unacked.append((message.mid, message.qos))
                if len(self._unacked) >= COMMIT_BATCH:
                    self._batch_full.set()

    async def handle(self, topic: str, payload: bytes, retained: bool) -> None:
        """Decode one message and deliver it to the extensions that asked for it; drop it if it is not of the
        contract."""
        try:
            decoded = decode_message(self.topics, topic, payload, retained)
        except MessageError as exc:
            self._reject(exc)
        else:
            await self.extensions.deliver(topic, decoded)

    def _reject(self, exc: MessageError) -> None:
        self.extensions.rejected += 1
        if exc.farm_id is None:
            log.warning("dropped a message: %s", exc)
            return
        kind = self.topics.parse(exc.topic).kind.value  # the topic parsed: the payload was what failed
        log.warning("farm %s: dropped a %s message: %s", exc.farm_id, kind, exc.reason)

    async def _commit_every(self, client: aiomqtt.Client) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._batch_full.wait(), COMMIT_INTERVAL_S)
            await self._commit(client)

    async def _commit(self, client: aiomqtt.Client) -> None:
        """Commit the extensions' writes, then acknowledge the messages they came from, in order."""
        self._batch_full.clear()
        if not self._unacked:
            return
        # all delivered before this point, so their writes are in what the extensions commit below
        committed, self._unacked = self._unacked, []
        if not await self.extensions.commit():
            # not acknowledged: the broker sends them again on the next connection
            raise aiomqtt.MqttError("an extension could not commit; reconnecting to be sent the messages again")
        for mid, qos in committed:
            acknowledge(client, mid, qos)
