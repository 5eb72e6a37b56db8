"""The broker's sessions, by client id: which connection continues which session, and what waits for
a persistent session while it is offline.

Where amqtt 0.12.1 broke MQTT 3.1.1's promises, kept here:

- Take-over (§3.1.4). A client that connects again while its old connection still looks alive (its
  link died without a FIN): with a clean session amqtt left the old connection open, and when that
  one's keepalive expired its will said "offline" after the client said "online"; with a persistent
  session the old connection's end marked the shared session disconnected after the new one took
  it. The old connection is closed first, without its will (the client is alive), and the new one
  starts once it is gone.
- Take-over across identities: refused (``broker.client_ids``), so a login cannot end the session
  of a client id that belongs to someone else.
- The offline queue (§3.3.1.3): delivered with RETAIN 0, bounded (:data:`MAX_QUEUED_OFFLINE` messages,
  :data:`MAX_QUEUED_OFFLINE_BYTES`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from broker.amqtt_adapter import LeanSession, MachineError, Retained

log = logging.getLogger("kubmesh.broker")

MAX_QUEUED_OFFLINE = 100_000  # messages kept for one offline persistent session; later ones are dropped
MAX_QUEUED_OFFLINE_BYTES = 64 * 1024 * 1024  # and their payloads together (Mosquitto's max_queued_bytes)
QUEUED_BYTES = "kubmesh.queued_bytes"  # a session's attribute: the payload bytes of its offline queue
TAKEOVER_WAIT_S = 2.0


class Connection(Protocol):
    """What the session table asks of a client's connection."""

    async def stop(self) -> None:
        """End the connection, as its client would with a DISCONNECT (amqtt's name: its frame calls it)."""

    async def handle_connection_closed(self) -> None:
        """End the connection as lost (its will goes unless its session's ``will_flag`` was cleared)."""


Table = dict[str, tuple[LeanSession, Connection | None]]


class SessionTable:
    """The sessions by client id and the connection serving each (None: offline)."""

    def __init__(self, drop_subscriptions: Callable[[LeanSession], None]) -> None:
        self.table: Table = {}
        self.offline_dropped = 0  # messages for offline persistent sessions beyond MAX_QUEUED_OFFLINE
        self._drop_subscriptions = drop_subscriptions

    def session(self, client_id: str) -> LeanSession | None:
        return self.table.get(client_id, (None, None))[0]

    def connection(self, client_id: str | None) -> Connection | None:
        return self.table.get(client_id or "", (None, None))[1]

    def holder(self, client_id: str) -> str | None:
        """The username of the session that holds ``client_id``, if any."""
        session = self.session(client_id)
        return None if session is None else session.username

    def connected(self) -> int:
        return sum(1 for session, _ in self.table.values() if session.transitions.is_connected())

    async def open(self, incoming: LeanSession, connection: Connection) -> LeanSession:
        """amqtt's session rules for an authenticated CONNECT: the session the connection continues."""
        client_id = incoming.client_id or ""
        session = incoming
        stored = self.session(client_id)
        if (stored is not None and not incoming.clean_session and not stored.clean_session
                and stored.username == incoming.username):  # §3.1.2.4: the same client resumes its session
            session = stored
            for name in ("will_flag", "will_message", "will_topic", "will_qos", "will_retain", "keep_alive",
                         "password", "remote_address", "remote_port", "ssl_object"):
                setattr(session, name, getattr(incoming, name))
            await self._take_over(session)
        elif stored is not None:  # a clean start, or a clean session's id: nothing carries over
            await self.delete(client_id)  # its live connection, if any, is ended without its will
        try:
            session.transitions.connect()
        except MachineError:  # the old connection did not end in time: end it now, without its will
            old = self.connection(client_id)
            session.will_flag, will = False, session.will_flag
            if old is not None and old is not connection:
                await old.handle_connection_closed()
            session.transitions.disconnect()
            session.transitions.connect()
            session.will_flag = will
        self.table[client_id] = (session, connection)
        return session

    async def delete(self, client_id: str) -> None:
        """A session dropped for a clean start: its live connection ends without its will."""
        session, connection = self.table.get(client_id, (None, None))
        if session is not None and connection is not None and session.transitions.is_connected():
            session.will_flag = False
            await connection.handle_connection_closed()  # the old connection ends, sending no will
        session = self.table.pop(client_id, (None, None))[0]
        if session is not None:
            self._drop_subscriptions(session)
            session.clear_queues()

    async def _take_over(self, session: LeanSession) -> None:
        """End the old connection of a persistent session that reconnects, before the new one starts."""
        old_session, old = self.table.get(session.client_id or "", (None, None))
        if old_session is not session or old is None or not session.transitions.is_connected():
            return
        will = session.will_flag  # already the new connection's will
        session.will_flag = False
        await old.handle_connection_closed()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TAKEOVER_WAIT_S
        # the old connection's loop ends it; the session's state has nothing to await, so poll
        while session.transitions.is_connected() and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)  # past the deadline, open()'s MachineError branch ends it
        session.will_flag = will

    def ended(self, session: LeanSession, connection: Connection) -> bool:
        """A connection ended; False when it no longer served its session (taken over, dropped)."""
        if self.connection(session.client_id) is not connection:
            return False
        if session.transitions.is_connected():
            session.transitions.disconnect()
        if session.clean_session or session.is_anonymous:  # nothing of it outlives the connection (§3.1.2.4)
            del self.table[session.client_id or ""]
            self._drop_subscriptions(session)
            session.clear_queues()
        return True

    def queue_offline(self, session: LeanSession, topic: str, data: bytes, qos: int) -> None:
        """A QoS 1 or 2 message kept for a persistent session until it reconnects (or, online, until it
        acknowledges enough to free a packet id), up to
        MAX_QUEUED_OFFLINE of them and MAX_QUEUED_OFFLINE_BYTES (as Mosquitto's ``max_queued_messages``
        and ``max_queued_bytes``); beyond that it is dropped, counted and logged at the first drop of
        each thousand."""
        queue = session.retained_messages
        held = session.attributes.get(QUEUED_BYTES, 0) + len(data)
        if queue.qsize() < MAX_QUEUED_OFFLINE and held <= MAX_QUEUED_OFFLINE_BYTES:
            queue.put_nowait(Retained(topic, data, qos))
            session.attributes[QUEUED_BYTES] = held
            return
        self.offline_dropped += 1
        if self.offline_dropped % 1000 == 1:
            log.warning("dropped a message on %s for the offline session %r: %d messages, %d bytes queued already "
                        "(%d dropped so far)", topic, session.client_id, queue.qsize(), held - len(data),
                        self.offline_dropped)

    @staticmethod
    def waiting(session: LeanSession) -> bool:
        """Whether messages wait in the session's queue (offline, or online with every packet id in use)."""
        return session.has_offline_queue() and not session.retained_messages.empty()

    @staticmethod
    def take_next(session: LeanSession) -> Retained | None:
        """The oldest message waiting in the session's queue, taken out of it."""
        if not SessionTable.waiting(session):
            return None
        message: Retained = session.retained_messages.get_nowait()
        session.attributes[QUEUED_BYTES] = max(0, session.attributes.get(QUEUED_BYTES, 0) - len(message.data))
        return message

    @staticmethod
    def take_queued(session: LeanSession) -> list[Retained]:
        """What came for a persistent session while it was offline, taken out of its queue."""
        if not session.has_offline_queue():
            return []
        queue = session.retained_messages
        messages = [queue.get_nowait() for _ in range(queue.qsize())]
        session.retained_messages = queue  # empty now: the session lets it go
        session.attributes.pop(QUEUED_BYTES, None)
        return messages

