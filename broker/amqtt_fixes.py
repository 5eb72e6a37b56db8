"""Where amqtt 0.12.1 breaks MQTT 3.1.1's promises, and what keeps them in kubmesh's broker.

Store-and-forward is only as good as the broker under it; tests/test_broker_promises.py runs each
promise against this broker and against Mosquitto. The embedded broker's connections are
``broker.fastpath.BrokerConnection``, which keeps these itself: keepalive (§3.1.2.10: a half-open
connection is closed after 1.5 × keepalive, and its will sent; amqtt ignored the timeout),
in-flight QoS 1 (§4.4: kept until its PUBACK and sent again with DUP on reconnect; amqtt dropped it
after 5 s or at disconnect) and the offline queue (§3.3.1.3: delivered with RETAIN 0; amqtt set it).
What amqtt's broker itself decides is mended here:

- Takeover (§3.1.4). A client that connects again while its old connection still looks alive (its
  link died without a FIN): with clean session amqtt leaves the old connection open, and when
  that one's keepalive expires its will says "offline" after the client said "online"; with a
  persistent session the old connection's end marks the shared session disconnected after the new
  one took it, and live messages then wait in the offline queue instead of being delivered. The
  old connection is closed first, without its will (the client is alive), and the new one starts
  once it is gone.
- Retained QoS (§3.8.4). A retained message goes out at the lower of its own and the
  subscription's QoS (:func:`retained_qos`, applied by ``broker.fastpath.FastPathBroker``).
"""

from __future__ import annotations

import asyncio

from amqtt.broker import Broker
from amqtt.session import Session

KEEPALIVE_GRACE = 1.5  # MQTT 3.1.1: disconnect after one and a half keepalive periods of silence
TAKEOVER_WAIT_S = 2.0


def retained_qos(subscription_qos: int, message_qos: int | None) -> int:
    """The QoS a retained message is delivered at: never more than it was published with."""
    return subscription_qos if message_qos is None else min(subscription_qos, message_qos)


class PromiseKeepingBroker(Broker):
    """amqtt's broker with the takeover mended; ``broker.server.KubBroker`` builds on it."""

    async def _delete_session(self, client_id: str) -> None:
        session, handler = self._sessions.get(client_id, (None, None))
        if session is not None and handler is not None and session.transitions.is_connected():
            session.will_flag = False
            await handler.handle_connection_closed()  # the old connection's loop ends it, sending no will
        await super()._delete_session(client_id)

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
