"""Where amqtt 0.12.1 breaks MQTT 3.1.1's delivery promises, and the smallest overrides that keep them.

Store-and-forward is only as good as the broker under it; tests/test_broker_promises.py runs each
promise against this broker and against Mosquitto.

The embedded broker's TCP and TLS listeners are served by ``broker.fastpath.BrokerConnection``,
which keeps promises 1 to 3 and 5 itself; the overrides of amqtt's handler below (1, 2, 3) serve
the listeners amqtt still handles itself (websockets), and the take-over (4) serves both.

1. Keepalive (§3.1.2.10). amqtt's reader times out after the keepalive but its broker handler
   ignores the timeout, so a half-open connection (a cut LTE link, a killed NAT entry) stays
   "connected" for ever and its will is never sent. :class:`KeepaliveHandler` closes the
   connection after 1.5 × keepalive without a packet, which sends the will.
2. In-flight QoS 1 (§4.4). amqtt drops an outgoing QoS 1 message from the session when its
   PUBACK has not come within 5 s or when the connection ends, so a reconnecting persistent
   session never gets it again. :class:`KeepaliveHandler` keeps it until its PUBACK arrives, and
   amqtt's own start-up retry then redelivers it, with DUP set, on reconnect.
3. Offline queue (§3.3.1.3). Messages queued for an offline persistent session are delivered on
   reconnect with the RETAIN flag set, as if they were retained messages; they are live messages
   and go out with RETAIN 0.
4. Takeover (§3.1.4). A client that connects again while its old connection still looks alive
   (its link died without a FIN): with clean session amqtt leaves the old connection open, and
   when that one's keepalive expires its will says "offline" after the client said "online";
   with a persistent session the old connection's end marks the shared session disconnected
   after the new one took it, and live messages then wait in the offline queue instead of being
   delivered. The old connection is closed first, without its will (the client is alive), and
   the new one starts once it is gone.
5. Retained QoS (§3.8.4). A retained message goes out at the lower of its own and the
   subscription's QoS; that rule is applied in ``broker.fastpath.FastPathBroker``'s retained
   delivery via :func:`retained_qos`.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.puback import PubackPacket
from amqtt.session import OUTGOING, IncomingApplicationMessage, OutgoingApplicationMessage, Session

PUBACK_WAIT_S = 5.0  # how long one delivery task waits; the message stays in flight after that
KEEPALIVE_GRACE = 1.5  # MQTT 3.1.1: disconnect after one and a half keepalive periods of silence
TAKEOVER_WAIT_S = 2.0


def retained_qos(subscription_qos: int, message_qos: int | None) -> int:
    """The QoS a retained message is delivered at: never more than it was published with."""
    return subscription_qos if message_qos is None else min(subscription_qos, message_qos)


class KeepaliveHandler(BrokerProtocolHandler):
    """amqtt's broker-side protocol handler with fixes 1 and 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._closing: asyncio.Task[None] | None = None

    def handle_read_timeout(self) -> None:
        if self._closing is None:
            self._closing = asyncio.ensure_future(self.handle_connection_closed())

    async def _handle_qos1_message_flow(
        self, app_message: OutgoingApplicationMessage | IncomingApplicationMessage
    ) -> None:
        if app_message.direction != OUTGOING or self.session is None or app_message.packet_id is None:
            await super()._handle_qos1_message_flow(app_message)
            return
        packet_id = app_message.packet_id
        self.session.inflight_out[packet_id] = app_message
        retry = app_message.publish_packet is not None
        packet = app_message.build_publish_packet(dup=retry)
        waiter: asyncio.Future[PubackPacket] = asyncio.get_running_loop().create_future()
        self._puback_waiters[packet_id] = waiter
        try:
            await self._send_packet(packet)
            app_message.publish_packet = packet
            app_message.puback_packet = await asyncio.wait_for(waiter, PUBACK_WAIT_S)
        except (TimeoutError, asyncio.CancelledError):
            # no PUBACK yet, or the connection ended (its waiter cancelled): the message stays in flight
            # for the next connect; only a cancellation of this task itself goes on up
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            return
        finally:
            self._puback_waiters.pop(packet_id, None)
        self.session.inflight_out.pop(packet_id, None)

    async def handle_puback(self, puback: PubackPacket) -> None:
        packet_id = puback.variable_header.packet_id if puback.variable_header else None
        if packet_id is not None and packet_id not in self._puback_waiters and self.session is not None:
            self.session.inflight_out.pop(packet_id, None)  # a late PUBACK still completes the delivery
            return
        await super().handle_puback(puback)


class PromiseKeepingBroker(Broker):
    """amqtt's broker with fixes 1 to 4; ``broker.server.KubBroker`` builds on it."""

    async def _delete_session(self, client_id: str) -> None:
        session, handler = self._sessions.get(client_id, (None, None))
        if session is not None and handler is not None and session.transitions.is_connected():
            session.will_flag = False
            await handler.handle_connection_closed()  # the old connection's loop ends it, sending no will
        await super()._delete_session(client_id)

    async def _initialize_client_session(
        self, reader: ReaderAdapter, writer: WriterAdapter, remote_address: str, remote_port: int
    ) -> tuple[BrokerProtocolHandler, Session]:
        _, session = await super()._initialize_client_session(reader, writer, remote_address, remote_port)
        if session.keep_alive > 0:
            session.keep_alive = math.ceil(session.keep_alive * KEEPALIVE_GRACE)
        await self._take_over(session)
        # amqtt returns a handler that is not attached yet: ours takes its place
        return KeepaliveHandler(self.plugins_manager, loop=self._loop), session

    async def _take_over(self, session: Session) -> None:
        """End the old connection of a persistent session that reconnects, before the new one starts."""
        old_session, old_handler = self._sessions.get(session.client_id or "", (None, None))
        if old_session is not session or old_handler is None or not session.transitions.is_connected():
            return
        will = session.will_flag  # already the new connection's will
        session.will_flag = False
        await old_handler.handle_connection_closed()
        deadline = asyncio.get_running_loop().time() + TAKEOVER_WAIT_S
        # the old connection's loop ends it; amqtt's session state machine has nothing to await, so poll
        while session.transitions.is_connected() and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)  # past the deadline, amqtt's own takeover is the fallback
        session.will_flag = will

    async def _publish_session_retained_messages(self, session: Session) -> None:
        handler = self._get_handler(session)
        if handler is None:
            return
        queued = []
        while not session.retained_messages.empty():
            queued.append(session.retained_messages.get_nowait())
        tasks = [asyncio.ensure_future(handler.mqtt_publish(m.topic, m.data, m.qos, retain=False))
                 for m in queued]
        if tasks:
            await asyncio.wait(tasks)
