"""The embedded broker's MQTT 3.1.1 connections: one protocol object each, whole packets, no task per message.

amqtt serves each connection with seven asyncio tasks and four queues, decodes every packet field by
field with an await per read, and hands each message through its broadcast queue to a new task per
subscriber that waits for the PUBACK. At a few thousand farms that is most of the broker's CPU and
memory. :class:`FastPathBroker` keeps amqtt's broker as the frame (its configuration, listeners,
sessions, subscription table, retained messages, authentication and topic plug-ins, events) and
serves its TCP and TLS listeners with :class:`BrokerConnection`, an ``asyncio.Protocol`` that:

- cuts whole packets out of what the socket delivered and handles PUBLISH, PUBACK, PUBREC, PUBREL,
  PUBCOMP, PINGREQ, UNSUBSCRIBE and DISCONNECT inline; CONNECT and SUBSCRIBE, which ask plug-ins
  and may wait on other connections, run as one task during which the connection's later packets
  wait, so a client's packets are still handled in the order it sent them;
- routes a message when it arrives: the topic's filters from :class:`broker.topic_index.FilterIndex`,
  the ACL decision from the cached :class:`broker.plugins.AclCache`, and each delivery written to the
  subscriber's transport, encoded once per QoS; a QoS 1 or 2 delivery stays in the session's
  ``inflight_out`` until acknowledged and is sent again, with DUP set, on reconnect;
- keeps amqtt's session semantics: clean and persistent sessions, messages queued for an offline
  persistent session and delivered on reconnect, take-over of a client id, last wills (sent when a
  connection ends without DISCONNECT, or after 1.5 × keepalive of silence), retained messages on
  subscribe checked against the ACL.

The credentials are checked before anything else of the CONNECT is acted on, so a refused
connection cannot end, or take over, the session of a client that uses the same client id.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from amqtt.broker import RetainedApplicationMessage
from amqtt.contexts import Action, ListenerType
from amqtt.events import BrokerEvents
from amqtt.session import IncomingApplicationMessage, OutgoingApplicationMessage, Session
from transitions import MachineError

from broker.amqtt_fixes import retained_qos
from broker.mqtt_packets import (
    ACCEPTED,
    CONNECT,
    DISCONNECT,
    MAX_CONNECT,
    NOT_AUTHORIZED,
    PINGREQ,
    PINGRESP_PACKET,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    SUBSCRIBE,
    UNSUBSCRIBE,
    ProtocolError,
    ack,
    parse_connect,
    publish_head,
    read_string,
    read_text,
    remaining_length,
)
from broker.topic_index import FilterIndex, Subscriptions
from broker.tuning import LISTEN_BACKLOG, LeanSession, TunedBroker

log = logging.getLogger("kubmesh.broker")

CONNECT_TIMEOUT_S = 10.0  # a connection that sends no CONNECT within this is closed
MAX_INFLIGHT = 65_535  # QoS 1 and 2 deliveries a client has not acknowledged: one per packet id
MAX_UNREAD_BYTES = 64 * 1024 * 1024  # written to a client and not yet taken by its socket: it stopped reading
MAX_QUEUED_OFFLINE = 100_000  # messages kept for one offline persistent session; later ones are dropped
REFUSED = 0x80
FILTERS = "kubmesh.filters"  # a session's attribute: the topic filters it subscribed to


class BrokerConnection(asyncio.Protocol):
    """One client connection of a :class:`FastPathBroker`; what amqtt keeps as the session's handler."""

    __slots__ = (
        "_buffer", "_busy", "_deadline", "_ended", "_keepalive", "_last_packet", "_loop", "_need", "_pending",
        "broker", "listener", "session", "transport",
    )

    def __init__(self, broker: FastPathBroker, listener: str) -> None:
        self.broker = broker
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.session: Session | None = None
        self._loop = asyncio.get_running_loop()
        self._buffer = bytearray()
        self._busy = True  # until the CONNECT has been handled
        self._ended = False
        self._keepalive = 0.0
        self._last_packet = 0.0
        self._deadline: asyncio.TimerHandle | None = None
        self._pending: list[bytes] | None = None
        self._need = 0  # the size of the packet the buffer holds the start of, once its header is there

    # the transport's callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.broker.connection_opened(self)
        if self._ended:  # refused: the listener is full
            return
        self._busy = False
        self._deadline = self._loop.call_later(CONNECT_TIMEOUT_S, self._connect_timed_out)

    def data_received(self, data: bytes) -> None:
        self._last_packet = self._loop.time()
        if self._busy or self._buffer:
            self._buffer += data
            if not self._busy and len(self._buffer) >= self._need:  # a large packet is cut out once, when whole
                self._drain()
            return
        rest = self._feed(data)
        if rest:
            self._buffer += rest

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(clean=False)
        self.broker.connection_closed(self)

    # packets in

    def _drain(self) -> None:
        data = bytes(self._buffer)
        self._buffer.clear()
        rest = self._feed(data)
        if rest:
            self._buffer += rest

    def _feed(self, data: bytes) -> bytes:
        """Handle every whole packet in ``data``; returns what is left (a part packet, or all after a CONNECT)."""
        pos, end = 0, len(data)
        self._need = 0
        try:
            while pos + 1 < end and not self._ended:
                length = data[pos + 1]
                start = pos + 2
                if length & 0x80:
                    length, multiplier = length & 0x7F, 128
                    while True:
                        if start >= end:
                            return data[pos:]
                        byte = data[start]
                        start += 1
                        length += (byte & 0x7F) * multiplier
                        if not byte & 0x80:
                            break
                        multiplier *= 128
                        if multiplier > 128**3:
                            raise ProtocolError("a remaining length of more than four bytes")
                if self.session is None and length > MAX_CONNECT:
                    raise ProtocolError(f"a first packet of {length} bytes, more than a CONNECT can hold")
                stop = start + length
                if stop > end:
                    self._need = stop - pos
                    return data[pos:]
                header = data[pos]
                pos = stop
                self._packet(header >> 4, header & 0x0F, data[start:stop])
                if self._busy:
                    return data[pos:]
            return b"" if self._ended else data[pos:]  # a lone first byte waits for its length
        except (ProtocolError, IndexError) as exc:
            log.warning("closing the connection of %s: %s", self._who(), exc or "a packet shorter than its fields")
            self._end(clean=False)
        except Exception:
            log.exception("closing the connection of %s after an unexpected error", self._who())
            self._end(clean=False)
        return b""

    def _packet(self, kind: int, flags: int, body: bytes) -> None:
        session = self.session
        if session is None:
            if kind != CONNECT:
                raise ProtocolError("the first packet is not a CONNECT (§3.1)")
            self._start(self._connect(body))
        elif kind == PUBLISH:
            self._publish(session, flags, body)
        elif kind == PUBACK:
            session.inflight_out.pop(body[0] << 8 | body[1], None)
        elif kind == PINGREQ:
            self._write(PINGRESP_PACKET)
        elif kind == PUBREC:
            packet_id = body[0] << 8 | body[1]
            message = session.inflight_out.get(packet_id)
            if message is not None:
                message.pubrec_packet = True  # the next step on reconnect is PUBREL
            self._write(ack(0x62, packet_id))
        elif kind == PUBREL:
            packet_id = body[0] << 8 | body[1]
            incoming = session.inflight_in.pop(packet_id, None)
            if incoming is not None and not self.broker.publish_received(
                session, incoming.topic, incoming.data, 2, incoming.retain
            ):
                raise ProtocolError(f"a PUBLISH to the invalid topic {incoming.topic!r}")
            self._write(ack(0x70, packet_id))
        elif kind == PUBCOMP:
            session.inflight_out.pop(body[0] << 8 | body[1], None)
        elif kind == SUBSCRIBE:
            if flags != 2:
                raise ProtocolError("SUBSCRIBE with reserved flags other than 0010 (§3.8.1)")
            self._start(self._subscribe(session, body))
        elif kind == UNSUBSCRIBE:
            if flags != 2:
                raise ProtocolError("UNSUBSCRIBE with reserved flags other than 0010 (§3.10.1)")
            self._unsubscribe(session, body)
        elif kind == DISCONNECT:
            self._end(clean=True)
        else:
            raise ProtocolError(f"a packet of type {kind} from a client")

    def _publish(self, session: Session, flags: int, body: bytes) -> None:
        qos = flags >> 1 & 3
        topic_raw, pos = read_string(body, 0)
        topic = read_text(topic_raw)
        if not qos:
            if not self.broker.publish_received(session, topic, body[pos:], 0, bool(flags & 1)):
                raise ProtocolError(f"a PUBLISH to the invalid topic {topic!r}")
            return
        if qos == 3:
            raise ProtocolError("a PUBLISH with QoS 3 (§3.3.1.2)")
        packet_id = body[pos] << 8 | body[pos + 1]
        data = body[pos + 2:]
        if qos == 1:
            if not self.broker.publish_received(session, topic, data, 1, bool(flags & 1)):
                raise ProtocolError(f"a PUBLISH to the invalid topic {topic!r}")
            self._write(ack(0x40, packet_id))
            return
        if packet_id not in session.inflight_in:  # a DUP of one not yet released is acknowledged again only
            session.inflight_in[packet_id] = IncomingApplicationMessage(packet_id, topic, 2, data, bool(flags & 1))
        self._write(ack(0x50, packet_id))

    def _unsubscribe(self, session: Session, body: bytes) -> None:
        packet_id = body[0] << 8 | body[1]
        pos, filters = 2, []
        while pos < len(body):
            raw, pos = read_string(body, pos)
            filters.append(read_text(raw))
        if not filters:
            raise ProtocolError("UNSUBSCRIBE without a topic filter (§3.10.3)")
        for topic_filter in filters:
            self.broker._del_subscription(topic_filter, session)
            self.broker.fire(BrokerEvents.CLIENT_UNSUBSCRIBED, client_id=session.client_id, topic=topic_filter)
        self._write(ack(0xB0, packet_id))

    # the steps that wait: the connection's later packets wait with them

    def _start(self, step: Any) -> None:
        self._busy = True
        if self.transport is not None:
            self.transport.pause_reading()
        task = asyncio.ensure_future(step)
        self.broker.track(task)
        task.add_done_callback(self._step_done)

    def _step_done(self, task: asyncio.Future[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            error = task.exception()
            if isinstance(error, ProtocolError | IndexError):
                log.warning("closing the connection of %s: %s", self._who(), error)
            else:
                log.error("closing the connection of %s after an unexpected error: %r", self._who(), error)
            self._end(clean=False)
        if self._ended:
            return
        self._busy = False
        if self.transport is not None:
            self.transport.resume_reading()
        if self._buffer:
            self._drain()

    async def _connect(self, body: bytes) -> None:
        connect = parse_connect(body)
        if isinstance(connect, int):
            self._refuse(connect)
            return
        session = connect
        peer = self.transport.get_extra_info("peername") if self.transport else None
        if isinstance(peer, tuple):
            session.remote_address, session.remote_port = peer[0], peer[1]
        session.ssl_object = self.transport.get_extra_info("ssl_object") if self.transport else None
        broker = self.broker
        if not await broker._authenticate(session, broker.listeners_config[self.listener]):
            self._refuse(NOT_AUTHORIZED)
            return
        if self._ended:
            return
        self.session = await broker.open_session(session, self)
        if self._ended:  # the client left while its session was being set up
            broker.connection_ended(self, clean=False)
            return
        present = 1 if self.session is not session else 0
        self._write(bytes((0x20, 2, present, ACCEPTED)))
        self._keepalive = float(self.session.keep_alive)
        self._watch_keepalive()
        await broker.plugins_manager.fire_event(
            BrokerEvents.CLIENT_CONNECTED, client_id=self.session.client_id, client_session=self.session
        )
        self.resend_inflight()
        broker.deliver_queued(self.session, self)
        if present:  # as amqtt does: a resumed session gets the retained messages of its subscriptions
            for topic_filter in list(self.session.attributes.get(FILTERS, ())):
                await broker._publish_retained_messages_for_subscription((topic_filter, 0), self.session)

    async def _subscribe(self, session: Session, body: bytes) -> None:
        packet_id = body[0] << 8 | body[1]
        pos, wanted = 2, []
        while pos < len(body):
            raw, pos = read_string(body, pos)
            qos = body[pos]
            pos += 1
            if qos > 2:
                raise ProtocolError("a subscription with QoS 3 (§3.8.3)")
            wanted.append((read_text(raw), qos))
        if not wanted:
            raise ProtocolError("SUBSCRIBE without a topic filter (§3.8.3)")
        broker = self.broker
        codes = [await broker.add_subscription(subscription, session) for subscription in wanted]
        self._write(bytes((0x90,)) + remaining_length(2 + len(codes)) + packet_id.to_bytes(2, "big") + bytes(codes))
        for (topic_filter, qos), code in zip(wanted, codes, strict=True):
            if code != REFUSED:
                broker.fire(BrokerEvents.CLIENT_SUBSCRIBED, client_id=session.client_id, topic=topic_filter, qos=qos)
                await broker._publish_retained_messages_for_subscription((topic_filter, code), session)

    # packets out

    def _write(self, data: bytes) -> None:
        """Packets written in one turn of the event loop leave together, in one send, at its end."""
        if self._ended:
            return
        if self._pending is None:
            self._pending = [data]
            self.broker.flush_soon(self)
        else:
            self._pending.append(data)

    def flush(self) -> None:
        pending, self._pending = self._pending, None
        transport = self.transport
        if pending and transport is not None and not transport.is_closing():
            transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
            if transport.get_write_buffer_size() > MAX_UNREAD_BYTES:
                # a client that stopped reading would hold the broker's memory without bound; its
                # unacknowledged QoS 1 and 2 messages stay in a persistent session and go again later
                log.warning("closing the connection of %s: it left %d bytes unread", self._who(),
                            transport.get_write_buffer_size())
                transport.abort()

    def send(self, topic: str, data: bytes, qos: int, head: bytes, retain: bool = False) -> None:
        """One delivery: ``head`` is :func:`publish_head` of this message at this QoS."""
        if not qos:
            self._write(head + data)
            return
        session = self.session
        assert session is not None
        if len(session.inflight_out) + len(session.inflight_in) >= MAX_INFLIGHT:  # no packet id left
            if not session.clean_session:  # it waits with what comes while the session is offline
                self.broker.queue_offline(session, topic, data, qos)
            if self.transport is not None and not self.transport.is_closing():
                log.warning("closing the connection of %s: %d messages unacknowledged", self._who(), MAX_INFLIGHT)
                self.transport.abort()  # it ends in connection_lost, after the delivery under way
            return
        packet_id = session.next_packet_id
        session.inflight_out[packet_id] = OutgoingApplicationMessage(packet_id, topic, qos, data, retain)
        self._write(head + bytes((packet_id >> 8, packet_id & 0xFF)) + data)

    def resend_inflight(self) -> None:
        """§4.4: what was sent and not acknowledged goes again, with DUP set, on reconnect."""
        assert self.session is not None
        for packet_id, message in list(self.session.inflight_out.items()):
            if message.qos == 2 and message.pubrec_packet is not None:
                self._write(ack(0x62, packet_id))
                continue
            data = bytes(message.data)
            head = publish_head(message.topic.encode(), len(data), message.qos or 0, message.retain, dup=True)
            self._write(head + bytes((packet_id >> 8, packet_id & 0xFF)) + data)

    async def mqtt_publish(self, topic: str, data: bytes | bytearray, qos: int | None, retain: bool) -> None:
        """amqtt's handler call for one message to this client (retained messages, plug-ins)."""
        payload = bytes(data)
        qos = qos or 0
        self.send(topic, payload, qos, publish_head(topic.encode(), len(payload), qos, retain), retain)

    # the end

    def _refuse(self, code: int) -> None:
        self._write(bytes((0x20, 2, 0, code)))
        self._end(clean=True)

    def _connect_timed_out(self) -> None:
        if self.session is None and not self._busy:
            log.warning("closing the connection of %s: no CONNECT within %.0f s", self._who(), CONNECT_TIMEOUT_S)
            self._end(clean=False)

    def _watch_keepalive(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self._keepalive > 0:
            self._deadline = self._loop.call_at(self._last_packet + self._keepalive, self._check_keepalive)

    def _check_keepalive(self) -> None:
        """§3.1.2.10: no packet for the keepalive and a half, the client is gone (its will is sent)."""
        self._deadline = None
        if self._loop.time() >= self._last_packet + self._keepalive:
            log.info("closing the connection of %s: silent for %.0f s", self._who(), self._keepalive)
            self._end(clean=False)
        else:
            self._watch_keepalive()

    def _end(self, clean: bool) -> None:
        if self._ended:
            return
        self.flush()
        self._ended = True
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        if self.session is not None:
            self.broker.connection_ended(self, clean)

    async def handle_connection_closed(self) -> None:
        """amqtt's handler call when its broker ends the connection (take-over, clean session)."""
        self._end(clean=False)

    async def stop(self) -> None:
        """amqtt's handler call when its broker drops the session (session expiry, shutdown)."""
        self._end(clean=True)

    def _who(self) -> str:
        if self.session is not None and self.session.client_id:
            return repr(self.session.client_id)
        peer = self.transport.get_extra_info("peername") if self.transport else None
        return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "a client"


class FastPathBroker(TunedBroker):
    """amqtt's broker with its TCP and TLS listeners served by :class:`BrokerConnection`.

    The ACL comes from the single topic plug-in :class:`broker.plugins.TopicAclPlugin` (through
    ``TunedBroker``); the broker refuses to start with another kind of listener (websockets) or
    without that plug-in, rather than serve it with amqtt's own handler.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.messages_received = 0  # every PUBLISH a client sent, for /metrics
        self.offline_dropped = 0  # messages for offline persistent sessions beyond MAX_QUEUED_OFFLINE
        self._shutting_down = False
        self.filters = FilterIndex()
        self._subscriptions: dict[str, list[tuple[Session, int]]] = Subscriptions(self._subscriptions, self.filters)
        self._connections: set[BrokerConnection] = set()
        self._steps: set[asyncio.Future[Any]] = set()
        self._to_flush: list[BrokerConnection] = []

    async def _create_server_instance(
        self,
        listener_name: str,
        listener_type: ListenerType,
        address: str | None,
        port: int,
        ssl_context: ssl.SSLContext | None,
    ) -> Any:
        """The listeners take a backlog of LISTEN_BACKLOG: when thousands of farms reconnect at once,
        asyncio's 100 would drop the rest of their SYNs, for the kernel to retry a second or more later."""
        if listener_type is not ListenerType.TCP or self._acl is None:
            raise ValueError(f"listener {listener_name!r}: the broker serves MQTT over TCP or TLS, with its topic ACL")
        return await asyncio.get_running_loop().create_server(
            lambda: BrokerConnection(self, listener_name),
            address, port, reuse_address=True, ssl=ssl_context, backlog=LISTEN_BACKLOG,
        )

    async def shutdown(self) -> None:
        self._shutting_down = True
        for connection in list(self._connections):
            connection._end(clean=True)
        await super().shutdown()

    # connections

    def connection_opened(self, connection: BrokerConnection) -> None:
        limit = int(self.listeners_config[connection.listener].get("max_connections", -1))
        if limit > 0 and sum(1 for c in self._connections if c.listener == connection.listener) >= limit:
            log.warning("refusing a connection on listener %r: it has its %d connections", connection.listener, limit)
            connection._end(clean=True)
            return
        self._connections.add(connection)

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

    def fire(self, event: BrokerEvents, **kwargs: Any) -> None:
        """A plug-in event, at the cost of a task only when a plug-in listens to it."""
        if event in self.plugins_manager._event_plugin_callbacks:
            self.track(asyncio.ensure_future(self.plugins_manager.fire_event(event, **kwargs)))

    async def open_session(self, incoming: Session, connection: BrokerConnection) -> Session:
        """amqtt's session rules for an authenticated CONNECT: the session the connection continues."""
        client_id = incoming.client_id or ""
        session = incoming
        stored = self._sessions.get(client_id, (None, None))[0]
        if (stored is not None and not incoming.clean_session and not stored.clean_session
                and stored.username == incoming.username):  # §3.1.2.4: the same client resumes its session
            session = stored
            for name in ("will_flag", "will_message", "will_topic", "will_qos", "will_retain", "keep_alive",
                         "password", "remote_address", "remote_port", "ssl_object"):
                setattr(session, name, getattr(incoming, name))
            await self._take_over(session)
        elif stored is not None:  # a clean start, a clean session's id, or another user's: nothing carries over
            await self._delete_session(client_id)  # its live connection, if any, is ended without its will
        try:
            session.transitions.connect()
        except MachineError:  # the old connection did not end in time: end it now, without its will
            old = self._sessions.get(client_id, (None, None))[1]
            session.will_flag, will = False, session.will_flag
            if old is not None and old is not connection:
                await old.handle_connection_closed()
            session.transitions.disconnect()
            session.transitions.connect()
            session.will_flag = will
        self._sessions[client_id] = (session, connection)
        return session

    def connection_ended(self, connection: BrokerConnection, clean: bool) -> None:
        session = connection.session
        if session is None:
            return
        current = self._sessions.get(session.client_id or "", (None, None))[1]
        if current is not connection:  # taken over or dropped already
            return
        if not clean and session.will_flag and session.will_topic is not None:
            self.send_will(session)
        if session.transitions.is_connected():
            session.transitions.disconnect()
        self.fire(BrokerEvents.CLIENT_DISCONNECTED, client_id=session.client_id, client_session=session)
        if session.clean_session or session.is_anonymous:  # nothing of it outlives the connection (§3.1.2.4)
            del self._sessions[session.client_id or ""]
            self.drop_subscriptions(session)
            session.clear_queues()

    async def _session_monitor(self) -> None:
        """amqtt looks at every session every second to drop those of clean sessions that ended; the
        lean connections drop theirs as they end, so that walk is left to session expiry."""
        if self.config.session_expiry_interval is not None:
            await super()._session_monitor()

    async def _cleanup_session(self, client_id: str) -> None:
        session = self._sessions.get(client_id, (None, None))[0]
        expiry = self.config.session_expiry_interval
        if (session is not None and expiry is not None and not session.clean_session and session.last_disconnect_time
                and session.transitions.state == "disconnected" and not self._shutting_down):
            log.info("dropped the session of %r: offline for more than %d s", client_id, expiry)
        await super()._cleanup_session(client_id)

    # subscriptions

    async def add_subscription(self, subscription: tuple[str, int], session: Session) -> int:
        topic_filter = subscription[0]
        code = await super().add_subscription(subscription, session)
        if code != REFUSED:
            session.attributes.setdefault(FILTERS, set()).add(topic_filter)
            # §3.8.4: a repeated subscription replaces the old one, with its QoS (amqtt keeps the old QoS)
            subscribers = dict.__getitem__(self._subscriptions, topic_filter)
            subscribers[:] = [(s, code if s.client_id == session.client_id else q) for s, q in subscribers]
        return code

    def _del_subscription(self, a_filter: str, session: Session) -> int:
        session.attributes.get(FILTERS, set()).discard(a_filter)
        deleted = super()._del_subscription(a_filter, session)
        if a_filter in self._subscriptions and not dict.__getitem__(self._subscriptions, a_filter):
            del self._subscriptions[a_filter]  # and out of the filter index: nothing left to deliver to
        return deleted

    async def _del_all_subscriptions(self, session: Session) -> None:
        self.drop_subscriptions(session)

    def drop_subscriptions(self, session: Session) -> None:
        """Every subscription of a session, found from its own list rather than by walking the table."""
        mine = session.attributes.pop(FILTERS, None)
        if mine is None and not isinstance(session, LeanSession):
            mine = list(dict.keys(self._subscriptions))  # a session from elsewhere: look everywhere
        for topic_filter in mine or ():
            self._del_subscription(topic_filter, session)

    def send_will(self, session: Session) -> None:
        topic, data, qos = session.will_topic or "", bytes(session.will_message or b""), session.will_qos or 0
        if not self.may(session, topic, Action.PUBLISH):
            return
        self.deliver(topic, data, qos)
        if session.will_retain:
            self.store_retained(topic, data, qos)

    # messages

    def publish_received(self, session: Session, topic: str, data: bytes, qos: int, retain: bool) -> bool:
        """A client's PUBLISH: routed if the ACL allows it; False for a topic no client may publish to."""
        self.messages_received += 1
        if not topic or "#" in topic or "+" in topic:
            return False  # §4.7.3, §3.3.2.2
        if topic.startswith("$"):  # the broker's own topics (§4.7.2): acknowledged and dropped, as Mosquitto does
            log.info("dropped a PUBLISH of %r to the broker's topic %r", session.client_id, topic)
            return True
        if self.may(session, topic, Action.PUBLISH):
            self.deliver(topic, data, qos)
            if retain:
                self.store_retained(topic, data, qos)
        return True

    def deliver(self, topic: str, data: bytes, qos: int) -> None:
        """A message to every subscriber allowed to receive it, at the lower of its and their QoS."""
        filters = self.filters.match(topic)
        if not filters:
            return
        heads: dict[int, bytes] = {}
        sessions = self._sessions
        subscriptions = self._subscriptions
        for topic_filter in filters:
            for target, subscribed_qos in dict.get(subscriptions, topic_filter, ()):
                granted = subscribed_qos if subscribed_qos < qos else qos
                if not self.may(target, topic, Action.RECEIVE):
                    continue
                if target.transitions.state != "connected":
                    if granted and not target.clean_session and not target.is_anonymous:
                        self.queue_offline(target, topic, data, granted)
                    continue
                handler = sessions.get(target.client_id or "", (None, None))[1]
                if isinstance(handler, BrokerConnection):
                    head = heads.get(granted)
                    if head is None:
                        head = heads[granted] = publish_head(topic.encode(), len(data), granted, False)
                    handler.send(topic, data, granted, head)

    def queue_offline(self, session: Session, topic: str, data: bytes, qos: int) -> None:
        """A QoS 1 or 2 message kept for a persistent session until it reconnects, up to
        MAX_QUEUED_OFFLINE of them (as Mosquitto's ``max_queued_messages``); beyond that it is dropped,
        counted and logged at the first drop of each thousand."""
        queue = session.retained_messages
        if queue.qsize() < MAX_QUEUED_OFFLINE:
            queue.put_nowait(RetainedApplicationMessage(None, topic, data, qos))
            return
        self.offline_dropped += 1
        if self.offline_dropped % 1000 == 1:
            log.warning("dropped a message on %s for the offline session %r: %d queued already (%d dropped so far)",
                        topic, session.client_id, MAX_QUEUED_OFFLINE, self.offline_dropped)

    def deliver_queued(self, session: Session, connection: BrokerConnection) -> None:
        """What came for a persistent session while it was offline: live messages, so RETAIN 0 (§3.3.1.3)."""
        queue = vars(session).get("retained_messages")  # not session.retained_messages: a LeanSession would make one
        if queue is None:
            return
        while not queue.empty():
            message = queue.get_nowait()
            data = bytes(message.data)
            qos = message.qos or 0
            connection.send(message.topic, data, qos, publish_head(message.topic.encode(), len(data), qos, False))
        session.retained_messages = queue  # empty now: a LeanSession lets it go

    def store_retained(self, topic: str, data: bytes, qos: int | None) -> None:
        """§3.3.1.3: kept for later subscribers, without the session that sent it; empty clears it."""
        if data:
            self._retained_messages[topic] = message = RetainedApplicationMessage(None, topic, data, qos)
            self.fire(BrokerEvents.RETAINED_MESSAGE, client_id=None, retained_message=message)
        elif topic in self._retained_messages:
            cleared = self._retained_messages.pop(topic)
            cleared.data = b""
            self.fire(BrokerEvents.RETAINED_MESSAGE, client_id=None, retained_message=cleared)

    async def retain_message(
        self,
        source_session: Session | None,
        topic_name: str | None,
        data: bytes | bytearray | None,
        qos: int | None = None,
    ) -> None:
        if topic_name is not None:
            self.store_retained(topic_name, bytes(data or b""), qos)

    async def _broadcast_message(
        self,
        session: Session | None,
        topic: str | None,
        data: bytes | bytearray | None,
        force_qos: int | None = None,
    ) -> None:
        """amqtt's broadcast (its plug-ins), delivered at once; without a QoS,
        at the subscription's, as amqtt does."""
        if topic:
            self.deliver(topic, bytes(data or b""), 2 if force_qos is None else force_qos)

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        """The retained messages a new subscription matches that the client may receive, at the lower
        of the subscription's and the message's QoS (§3.8.4).

        amqtt sends retained messages to any subscription that matches, so a viewer of one owner
        subscribing to ``kub/#`` would read every farm's retained state; and on connect it walks
        every client's subscription filters, sending a new client retained messages for filters it
        never subscribed to.
        """
        topic_filter, qos = subscription
        handler = self._sessions.get(session.client_id or "", (None, None))[1]
        if not isinstance(handler, BrokerConnection):
            return
        granted = [q for subscriber, q in dict.get(self._subscriptions, topic_filter, ())
                   if subscriber.client_id == session.client_id]
        if not granted:
            return
        qos = granted[0]  # on connect amqtt passes QoS 0 for a persistent session's filters
        literal = topic_filter.split("+", 1)[0].split("#", 1)[0]
        for topic, retained in list(self._retained_messages.items()):
            if not topic.startswith(literal) or not self._matches(topic, topic_filter):
                continue
            if not self.may(session, topic, Action.RECEIVE):
                continue
            data, message_qos = bytes(retained.data), retained_qos(qos, retained.qos)
            handler.send(topic, data, message_qos, publish_head(topic.encode(), len(data), message_qos, True), True)

