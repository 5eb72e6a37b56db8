"""The embedded broker: one object that owns each piece of the broker's state, with amqtt as its frame.

- the sessions by client id (``broker.sessions.SessionTable``), the subscriptions and their filter
  index (``broker.topic_index.Subscriptions``), the retained messages (``broker.retained.RetainedStore``);
- who may connect (``broker.access.IdentityAuth``, slowed by ``broker.login_throttle.LoginThrottle``,
  the client id ownership of ``broker.client_ids``) and what a client may do (``broker.access.TopicAcl``);
- the connections (``broker.fastpath.BrokerConnection``) and the limits they enforce (:class:`Limits`);
- amqtt's broker (``broker.amqtt_adapter.AmqttFrame``) for the configuration, listeners, start and
  shutdown, session expiry and plug-in events; it asks :class:`KubBroker` every decision on a message.

A message is routed when it arrives: the topic's filters from the index, the ACL decision from the
cached ``AclCache``, and each delivery written to the subscriber's connection, encoded once per QoS.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass
from typing import Any

from broker.access import IdentityAuth, TopicAcl
from broker.acl import Access
from broker.amqtt_adapter import Action, AmqttFrame, BrokerEvents, LeanSession
from broker.client_ids import may_use
from broker.fastpath import BrokerConnection
from broker.login_throttle import LoginThrottle
from broker.mqtt_packets import NOT_AUTHORIZED, publish_head
from broker.retained import RetainedStore, retained_qos
from broker.sessions import SessionTable
from broker.topic_index import REFUSED, FilterIndex, Subscriptions, valid_filter
from broker.tuning import LISTEN_BACKLOG, HeapFreezer
from common.identities import Identity, IdentityStore
from contract.topics import Topics

log = logging.getLogger("kubmesh.broker")

_ACCESS = {Action.PUBLISH: Access.PUBLISH, Action.SUBSCRIBE: Access.SUBSCRIBE, Action.RECEIVE: Access.RECEIVE}
DEFAULT_MAX_PACKET = 272 * 1024  # contract.payloads.MAX_PAYLOAD_BYTES (256 KiB) and room for topic and framing


@dataclass(frozen=True)
class Limits:
    """What one client may make the broker hold."""

    max_packet_bytes: int = DEFAULT_MAX_PACKET  # a packet's remaining length; larger ones close the connection
    max_unreleased: int = 1_000  # QoS 2 PUBLISHes received and not yet released by their PUBREL
    max_unreleased_bytes: int = 16 * 1024 * 1024  # their payloads together
    login_delay_max_s: float = 30.0  # the longest wait a login throttled by failures gets


class KubBroker:
    """kubmesh's MQTT 3.1.1 broker over amqtt's frame; ``start``/``shutdown``, and its tables to look at."""

    def __init__(self, config: dict[str, object], store: IdentityStore, topics: Topics, ha_prefix: str,
                 limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.auth = IdentityAuth(store)
        self.acl = TopicAcl(store, topics, ha_prefix)
        self.logins = LoginThrottle(self.limits.login_delay_max_s)
        self.filters = FilterIndex()
        self.subscriptions = Subscriptions(self.filters)
        self.retained = RetainedStore(topics)
        self.table = SessionTable(self.subscriptions.drop)
        self.heap = HeapFreezer()
        self.messages_received = 0  # every PUBLISH a client sent, for /metrics
        self.frame = AmqttFrame({**config, "plugins": {}}, self, self.table.table, self.subscriptions, self.retained)
        self._shutting_down = False
        self._connections: set[BrokerConnection] = set()
        self._steps: set[asyncio.Future[Any]] = set()
        self._to_flush: list[BrokerConnection] = []

    @property
    def sessions(self) -> dict[str, tuple[LeanSession, BrokerConnection | None]]:
        return self.table.table  # type: ignore[return-value]  # every connection in it is a BrokerConnection

    @property
    def offline_dropped(self) -> int:
        return self.table.offline_dropped

    async def start(self) -> None:
        await self.frame.start()
        self.heap.start()

    async def shutdown(self) -> None:
        self._shutting_down = True
        for connection in list(self._connections):
            connection.end(clean=True)
        await self.heap.stop()
        await self.frame.shutdown()

    # what amqtt's frame asks (broker.amqtt_adapter.FrameHooks)

    async def serve(self, listener: str, address: str | None, port: int,
                    ssl_context: ssl.SSLContext | None) -> asyncio.Server:
        """The listeners take a backlog of LISTEN_BACKLOG: when thousands of farms reconnect at once,
        asyncio's 100 would drop the rest of their SYNs, for the kernel to retry a second or more later."""
        return await asyncio.get_running_loop().create_server(
            lambda: BrokerConnection(self, listener), address, port, reuse_address=True, ssl=ssl_context,
            backlog=LISTEN_BACKLOG,
        )

    def session_dropped(self, client_id: str) -> None:
        session = self.table.session(client_id)
        expiry = self.frame.session_expiry_s
        if (session is not None and expiry is not None and not session.clean_session and session.last_disconnect_time
                and session.transitions.is_disconnected() and not self._shutting_down):
            log.info("dropped the session of %r: offline for more than %d s", client_id, expiry)

    def drop_subscriptions(self, session: LeanSession) -> None:
        self.subscriptions.drop(session)

    def may(self, session: LeanSession, topic: str, action: Action) -> bool:
        """The ACL's decision, without a task."""
        return self.acl.check(session.username, session.client_id, topic, _ACCESS[action])

    # connections

    def connection_opened(self, connection: BrokerConnection) -> bool:
        limit = self.frame.listener_option(connection.listener, "max_connections", -1)
        if limit > 0 and sum(1 for c in self._connections if c.listener == connection.listener) >= limit:
            log.warning("refusing a connection on listener %r: it has its %d connections", connection.listener, limit)
            return False
        self._connections.add(connection)
        return True

    def connection_closed(self, connection: BrokerConnection) -> None:
        self._connections.discard(connection)

    def flush_soon(self, connection: BrokerConnection) -> None:
        """Send what ``connection`` was given once this turn of the event loop is over: a subscriber to
        many farms gets every message of the turn in one send, not one send (and one wake-up) each."""
        self._to_flush.append(connection)
        if len(self._to_flush) == 1:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        connections, self._to_flush = self._to_flush, []
        for connection in connections:
            connection.flush()

    def track(self, step: asyncio.Future[Any]) -> None:
        self._steps.add(step)
        step.add_done_callback(self._steps.discard)

    def fire(self, event: BrokerEvents, **kwargs: object) -> None:
        """A plug-in event, at the cost of a task only when a plug-in listens to it."""
        fired = self.frame.fire(event, **kwargs)
        if fired is not None:
            self.track(asyncio.ensure_future(fired))

    async def login(self, session: LeanSession, source: str) -> Identity | int:
        """The identity a CONNECT proves, or the CONNACK code that refuses it; slowed after failures."""
        waited = self.logins.before_login(source)
        if waited:
            await asyncio.sleep(waited)
        proven = self.auth.authenticate(session.username, session.password)
        if isinstance(proven, str):
            self.logins.failed(source, session.username or "", f"client {session.client_id!r}: {proven}")
            rest = self.logins.before_refusal(session.username or "") - waited  # the longer of the two delays
            if rest > 0:
                await asyncio.sleep(rest)
            return NOT_AUTHORIZED
        self.logins.succeeded(source)
        client_id = session.client_id or ""
        if not may_use(client_id, proven, self.table.holder(client_id)):
            self.logins.refused(source, f"{proven.username!r} may not use the client id {client_id!r}")
            return NOT_AUTHORIZED
        return proven

    async def open_session(self, incoming: LeanSession, connection: BrokerConnection) -> LeanSession:
        self.acl.cache.recheck_store()
        return await self.table.open(incoming, connection)

    async def connected(self, session: LeanSession, connection: BrokerConnection, resumed: bool) -> None:
        """A CONNACK went out: the plug-ins hear of it, and what waited for the session goes."""
        fired = self.frame.fire(BrokerEvents.CLIENT_CONNECTED, client_id=session.client_id, client_session=session)
        if fired is not None:
            await fired
        connection.resend_inflight()
        for message in self.table.take_queued(session):  # live messages, so RETAIN 0 (§3.3.1.3)
            data, qos = bytes(message.data), message.qos or 0
            connection.send(message.topic, data, qos, publish_head(message.topic.encode(), len(data), qos, False))
        if resumed:  # as amqtt does: a resumed session gets the retained messages of its subscriptions
            for topic_filter in self.subscriptions.filters_of(session):
                self.send_retained(session, connection, topic_filter)

    def connection_ended(self, connection: BrokerConnection, clean: bool) -> None:
        session = connection.session
        if session is None:
            return
        will = not clean and session.will_flag and session.will_topic is not None
        if not self.table.ended(session, connection):
            return
        if will:
            self.send_will(session)
        self.fire(BrokerEvents.CLIENT_DISCONNECTED, client_id=session.client_id, client_session=session)

    # subscriptions

    def subscribe(self, session: LeanSession, topic_filter: str, qos: int) -> int:
        """The SUBACK code of one subscription: its granted QoS, or REFUSED."""
        if not valid_filter(topic_filter) or not self.may(session, topic_filter, Action.SUBSCRIBE):
            return REFUSED
        self.subscriptions.add(session, topic_filter, qos)
        self.fire(BrokerEvents.CLIENT_SUBSCRIBED, client_id=session.client_id, topic=topic_filter, qos=qos)
        return qos

    def unsubscribe(self, session: LeanSession, topic_filter: str) -> None:
        self.subscriptions.remove(session, topic_filter)
        self.fire(BrokerEvents.CLIENT_UNSUBSCRIBED, client_id=session.client_id, topic=topic_filter)

    def send_retained(self, session: LeanSession, connection: BrokerConnection, topic_filter: str) -> None:
        """The retained messages a subscription matches that the client may receive, at the lower of the
        subscription's and the message's QoS (§3.8.4). amqtt sent them to any subscription that matched,
        so a viewer of one owner subscribing to ``kub/#`` would read every farm's retained state."""
        qos = self.subscriptions.granted(session, topic_filter)
        if qos is None:
            return
        for retained in self.retained.matching(topic_filter):
            topic = retained.topic
            if not self.may(session, topic, Action.RECEIVE):
                continue
            data, message_qos = bytes(retained.data), retained_qos(qos, retained.qos)
            connection.send(topic, data, message_qos, publish_head(topic.encode(), len(data), message_qos, True), True)

    # messages

    def send_will(self, session: LeanSession) -> None:
        topic, data, qos = session.will_topic or "", bytes(session.will_message or b""), session.will_qos or 0
        if not self.may(session, topic, Action.PUBLISH):
            return
        self.deliver(topic, data, qos)
        if session.will_retain and not self.retained.refuses(topic):
            self.store_retained(topic, data, qos)

    def publish_allowed(self, session: LeanSession, topic: str) -> bool | None:
        """Whether a client's PUBLISH on ``topic`` is routed (False: dropped, as Mosquitto does); None for
        a topic no client may publish to (§4.7.3, §3.3.2.2), which closes the connection."""
        if not topic or "#" in topic or "+" in topic:
            return None
        if topic.startswith("$"):  # the broker's own topics (§4.7.2): acknowledged and dropped
            log.info("dropped a PUBLISH of %r to the broker's topic %r", session.client_id, topic)
            return False
        return self.may(session, topic, Action.PUBLISH)

    def publish_received(self, session: LeanSession, topic: str, data: bytes, qos: int, retain: bool) -> bool:
        """A client's PUBLISH: routed if the ACL allows it; False for a topic no client may publish to."""
        self.messages_received += 1
        allowed = self.publish_allowed(session, topic)
        if allowed is None:
            return False
        if allowed:
            self.route(session, topic, data, qos, retain)
        return True

    def route(self, session: LeanSession, topic: str, data: bytes, qos: int, retain: bool) -> None:
        """An allowed PUBLISH: delivered, and kept if retained, except on a command topic."""
        self.deliver(topic, data, qos)
        if retain:
            if self.retained.refuses(topic):
                log.info("not retaining the command %r of client %r: commands are never retained",
                         topic, session.client_id)
            else:
                self.store_retained(topic, data, qos)

    def deliver(self, topic: str, data: bytes, qos: int) -> None:
        """A message to every subscriber allowed to receive it, at the lower of its and their QoS."""
        filters = self.filters.match(topic)
        if not filters:
            return
        heads: dict[int, bytes] = {}
        table = self.table.table
        subscriptions, check, receive = self.subscriptions, self.acl.check, Access.RECEIVE  # the hot loop's names
        for topic_filter in filters:
            for target, subscribed_qos in dict.get(subscriptions, topic_filter, ()):
                granted = subscribed_qos if subscribed_qos < qos else qos
                if not check(target.username, target.client_id, topic, receive):
                    continue
                if target.transitions.state != "connected":
                    if granted and not target.clean_session and not target.is_anonymous:
                        self.table.queue_offline(target, topic, data, granted)
                    continue
                connection = table.get(target.client_id or "", (None, None))[1]
                if isinstance(connection, BrokerConnection):
                    head = heads.get(granted)
                    if head is None:
                        head = heads[granted] = publish_head(topic.encode(), len(data), granted, False)
                    connection.send(topic, data, granted, head)

    def store_retained(self, topic: str, data: bytes, qos: int | None) -> None:
        """§3.3.1.3: kept for later subscribers; empty clears it."""
        message = self.retained.store(topic, data, qos)
        if message is not None:
            self.fire(BrokerEvents.RETAINED_MESSAGE, client_id=None, retained_message=message)
