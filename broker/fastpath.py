"""The embedded broker's MQTT 3.1.1 connections: one protocol object each, whole packets, no task per message.

amqtt serves each connection with seven asyncio tasks and four queues, decodes every packet field by
field with an await per read, and hands each message through its broadcast queue to a new task per
subscriber that waits for the PUBACK. At a few thousand farms that is most of the broker's CPU and
memory. :class:`BrokerConnection` is an ``asyncio.Protocol`` of ``broker.core.KubBroker`` that:

- cuts whole packets out of what the socket delivered and handles every packet but CONNECT inline;
  CONNECT, which may wait (a throttled login, another connection's take-over), runs as one task
  during which the connection's later packets wait, so a client's packets are handled in order;
- refuses a packet longer than ``Limits.max_packet_bytes`` from its length header, before buffering
  it, and closes the connection;
- checks the ACL of a QoS 2 PUBLISH before keeping it until its PUBREL, and keeps at most
  ``Limits.max_unreleased`` of them (``max_unreleased_bytes`` together) per session;
- keeps MQTT's promises amqtt broke: keepalive (§3.1.2.10: a half-open connection is closed after
  1.5 × keepalive, and its will sent), in-flight QoS 1 and 2 (§4.4: kept until acknowledged and sent
  again with DUP on reconnect), and a client that stops reading is closed rather than buffered for.

The credentials are checked before anything else of the CONNECT is acted on, so a refused
connection cannot end, or take over, the session of a client that uses the same client id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, cast

from broker.amqtt_adapter import Incoming, LeanSession, Outgoing
from broker.mqtt_packets import (
    ACCEPTED,
    CONNECT,
    DISCONNECT,
    MAX_CONNECT,
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
from broker.topic_index import REFUSED

if TYPE_CHECKING:
    from broker.core import KubBroker

log = logging.getLogger("kubmesh.broker")

CONNECT_TIMEOUT_S = 10.0  # a connection that sends no CONNECT within this is closed
MAX_INFLIGHT = 65_535  # QoS 1 and 2 deliveries a client has not acknowledged: one per packet id
MAX_UNREAD_BYTES = 64 * 1024 * 1024  # written to a client and not yet taken by its socket: it stopped reading


class BrokerConnection(asyncio.Protocol):
    """One client connection of a :class:`broker.core.KubBroker`; what amqtt keeps as the session's handler."""

    __slots__ = (
        "_buffer", "_busy", "_deadline", "_ended", "_keepalive", "_last_packet", "_loop", "_max_packet", "_need",
        "_pending", "broker", "listener", "session", "transport",
    )

    def __init__(self, broker: KubBroker, listener: str) -> None:
        self.broker = broker
        self._max_packet = broker.limits.max_packet_bytes
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.session: LeanSession | None = None
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
        self.transport = cast(asyncio.Transport, transport)  # a stream server's transports are (uvloop's too)
        if not self.broker.connection_opened(self):  # refused: the listener is full
            self.end(clean=True)
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
        self.end(clean=False)
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
                if length > self._max_packet:  # refused from its header: never buffered
                    raise ProtocolError(f"a packet of {length} bytes, more than the broker's maximum of "
                                        f"{self._max_packet} (MQTT_MAX_PACKET_SIZE)")
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
            self.end(clean=False)
        except Exception:
            log.exception("closing the connection of %s after an unexpected error", self._who())
            self.end(clean=False)
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
            self._send_waiting(session)
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
            if incoming is not None:  # its topic and the ACL were checked when it came
                self.broker.route(session, incoming.topic, incoming.data, 2, incoming.retain)
            self._write(ack(0x70, packet_id))
        elif kind == PUBCOMP:
            session.inflight_out.pop(body[0] << 8 | body[1], None)
            self._send_waiting(session)
        elif kind == SUBSCRIBE:
            if flags != 2:
                raise ProtocolError("SUBSCRIBE with reserved flags other than 0010 (§3.8.1)")
            self._subscribe(session, body)
        elif kind == UNSUBSCRIBE:
            if flags != 2:
                raise ProtocolError("UNSUBSCRIBE with reserved flags other than 0010 (§3.10.1)")
            self._unsubscribe(session, body)
        elif kind == DISCONNECT:
            self.end(clean=True)
        else:
            raise ProtocolError(f"a packet of type {kind} from a client")

    def _publish(self, session: LeanSession, flags: int, body: bytes) -> None:
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
            self._keep_unreleased(session, packet_id, topic, data, bool(flags & 1))
        self._write(ack(0x50, packet_id))

    def _keep_unreleased(self, session: LeanSession, packet_id: int, topic: str, data: bytes, retain: bool) -> None:
        """A QoS 2 PUBLISH, kept until its PUBREL only if it may be routed: a refused one is acknowledged
        (MQTT 3.1.1 has no refusal for it, and Mosquitto does the same) and dropped now."""
        self.broker.messages_received += 1
        allowed = self.broker.publish_allowed(session, topic)
        if allowed is None:
            raise ProtocolError(f"a PUBLISH to the invalid topic {topic!r}")
        if not allowed:
            return
        limits = self.broker.limits
        held = sum(len(message.data) for message in session.inflight_in.values()) + len(data)
        if len(session.inflight_in) >= limits.max_unreleased or held > limits.max_unreleased_bytes:
            session.inflight_in.clear()  # what it sent and never released is dropped with it
            raise ProtocolError(f"more than {limits.max_unreleased} QoS 2 messages or "
                                f"{limits.max_unreleased_bytes} bytes unreleased")
        session.inflight_in[packet_id] = Incoming(packet_id, topic, 2, data, retain)

    def _unsubscribe(self, session: LeanSession, body: bytes) -> None:
        packet_id = body[0] << 8 | body[1]
        pos, filters = 2, []
        while pos < len(body):
            raw, pos = read_string(body, pos)
            filters.append(read_text(raw))
        if not filters:
            raise ProtocolError("UNSUBSCRIBE without a topic filter (§3.10.3)")
        for topic_filter in filters:
            self.broker.unsubscribe(session, topic_filter)
        self._write(ack(0xB0, packet_id))

    # the step that waits: the connection's later packets wait with it

    def _start(self, step: Coroutine[Any, Any, None]) -> None:
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
            self.end(clean=False)
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
        identity = await broker.login(session, session.remote_address or "unknown")
        if isinstance(identity, int):
            self._refuse(identity)
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
        await broker.connected(self.session, self, resumed=bool(present))

    def _subscribe(self, session: LeanSession, body: bytes) -> None:
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
        codes = [self.broker.subscribe(session, topic_filter, qos) for topic_filter, qos in wanted]
        self._write(bytes((0x90,)) + remaining_length(2 + len(codes)) + packet_id.to_bytes(2, "big") + bytes(codes))
        for (topic_filter, _), code in zip(wanted, codes, strict=True):
            if code != REFUSED:
                self.broker.send_retained(session, self, topic_filter)

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
        if self._window_full(session) or self.broker.table.waiting(session):
            # no packet id left: it waits in the session's queue (bounded, as the offline one is) and goes, in
            # order, as the client acknowledges (a subscriber behind, like a history node committing a long
            # replay, is kept, not cut off to come back to the same wall at every reconnect)
            self.broker.table.queue_offline(session, topic, data, qos)
            return
        self._deliver(session, topic, data, qos, head, retain)

    @staticmethod
    def _window_full(session: LeanSession) -> bool:
        return len(session.inflight_out) + len(session.inflight_in) >= MAX_INFLIGHT

    def _send_waiting(self, session: LeanSession) -> None:
        """A packet id came free: what waits in the session's queue goes, oldest first (RETAIN 0, §3.3.1.3)."""
        table = self.broker.table
        while not self._window_full(session) and (message := table.take_next(session)) is not None:
            data, qos = bytes(message.data), message.qos or 0
            head = publish_head(message.topic.encode(), len(data), qos, False)
            self._deliver(session, message.topic, data, qos, head, False)

    def _deliver(self, session: LeanSession, topic: str, data: bytes, qos: int, head: bytes, retain: bool) -> None:
        packet_id = session.next_packet_id
        session.inflight_out[packet_id] = Outgoing(packet_id, topic, qos, data, retain)
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

    # the end

    def _refuse(self, code: int) -> None:
        self._write(bytes((0x20, 2, 0, code)))
        self.end(clean=True)

    def _connect_timed_out(self) -> None:
        if self.session is None and not self._busy:
            log.warning("closing the connection of %s: no CONNECT within %.0f s", self._who(), CONNECT_TIMEOUT_S)
            self.end(clean=False)

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
            self.end(clean=False)
        else:
            self._watch_keepalive()

    def end(self, clean: bool) -> None:
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
        self.end(clean=False)

    async def stop(self) -> None:
        """amqtt's handler call when its broker drops the session (session expiry, shutdown)."""
        self.end(clean=True)

    def _who(self) -> str:
        if self.session is not None and self.session.client_id:
            return repr(self.session.client_id)
        peer = self.transport.get_extra_info("peername") if self.transport else None
        return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "a client"
