"""Everything kubmesh's broker uses of amqtt 0.12, in one module: read this file on an amqtt upgrade.

amqtt is the frame of the embedded broker: its configuration, listeners, start and shutdown, session
expiry, its session and message classes and its plug-in events. kubmesh owns the rest (connections,
routing, retained messages, sessions' rules: ``broker.core``). amqtt has no type hints, so this module
also gives its objects the types kubmesh relies on; nothing outside it imports amqtt.

amqtt's private members used here, and why:

- ``Broker._sessions``, ``Broker._subscriptions``, ``Broker._retained_messages``: replaced at
  construction by the tables kubmesh owns (:class:`AmqttFrame`), which amqtt's start, shutdown,
  session expiry and plug-in context read.
- ``Broker._create_server_instance``: the listeners are served by kubmesh's connections.
- ``Broker._session_monitor``: amqtt's once-a-second walk of every session, run only for expiry.
- ``Broker._cleanup_session``: logged when it drops an expired session.
- ``Broker._del_all_subscriptions``: amqtt's cleanup drops a session's subscriptions through kubmesh.
- ``Broker._broadcast_message``, ``Broker._topic_filtering``: what plug-ins send and ask, through kubmesh.
- ``Broker._matches``: amqtt's topic matching (:func:`amqtt_matches`), for retained messages on subscribe
  and as the reference the filter index is tested against.
- ``PluginManager._event_plugin_callbacks``: whether any plug-in listens to an event (:meth:`AmqttFrame.fire`).
- ``Session._init_states``: a :class:`LeanSession` gets a small state object, not a ``transitions.Machine``.
- ``Session._on_enter_connected``, ``Session._on_enter_disconnected``: the connect and disconnect times
  that session expiry reads, called by :class:`SessionState`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import types
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Mapping
from typing import Any, ClassVar, Protocol

from amqtt.broker import Broker, RetainedApplicationMessage
from amqtt.contexts import Action, ListenerType
from amqtt.events import BrokerEvents
from amqtt.session import IncomingApplicationMessage, OutgoingApplicationMessage, Session
from amqtt.utils import gen_client_id as _gen_client_id
from transitions import MachineError

__all__ = [
    "Action",
    "AmqttFrame",
    "BrokerEvents",
    "FrameHooks",
    "Incoming",
    "LeanSession",
    "MachineError",
    "Outgoing",
    "Retained",
    "SessionState",
    "amqtt_matches",
    "gen_client_id",
]

log = logging.getLogger("kubmesh.broker")


class Incoming(IncomingApplicationMessage):  # type: ignore[misc]
    """A QoS 2 PUBLISH received and not yet released by its PUBREL."""

    topic: str
    data: bytes
    retain: bool


class Outgoing(OutgoingApplicationMessage):  # type: ignore[misc]
    """A QoS 1 or 2 delivery not yet acknowledged."""

    topic: str
    qos: int | None
    data: bytes | bytearray
    retain: bool
    pubrec_packet: object | None


class Retained(RetainedApplicationMessage):  # type: ignore[misc]
    """A retained message, or one kept for an offline persistent session; without its sender's session,
    which it would keep alive."""

    topic: str
    data: bytes | bytearray
    qos: int | None

    def __init__(self, topic: str, data: bytes, qos: int | None) -> None:
        super().__init__(None, topic, data, qos)


class SessionState:
    """The part of ``transitions.Machine`` amqtt uses on a session: ``state``, ``connect``,
    ``disconnect``, ``is_connected``; the same moves, the same errors, the same enter callbacks."""

    __slots__ = ("_session", "state")

    _MOVES: ClassVar[dict[str, dict[str, str]]] = {
        "connect": {"new": "connected", "disconnected": "connected"},
        "disconnect": {"connected": "disconnected", "new": "disconnected", "disconnected": "disconnected"},
    }

    def __init__(self, session: LeanSession) -> None:
        self._session = weakref.ref(session)  # no cycle: a session leaves memory as soon as it is dropped
        self.state = "new"

    def _move(self, trigger: str) -> bool:
        target = self._MOVES[trigger].get(self.state)
        if target is None:
            raise MachineError(f"Can't trigger event {trigger} from state {self.state}!")
        self.state = target
        session = self._session()
        if session is not None:
            if target == "connected":
                session._on_enter_connected()
            else:
                session._on_enter_disconnected()
        return True

    def connect(self) -> bool:
        return self._move("connect")

    def disconnect(self) -> bool:
        return self._move("disconnect")

    def is_connected(self) -> bool:
        return self.state == "connected"

    def is_disconnected(self) -> bool:
        return self.state == "disconnected"

    def is_new(self) -> bool:
        return self.state == "new"


class _QueueWhenNeeded:
    """A session's message queue, made when first used and dropped again while empty.

    An empty ``asyncio.Queue`` holds four deques, about 3 KB; every amqtt session has two, and a
    farm's session rarely needs either (the offline queue of a persistent session, the stock
    handler's delivery queue). Setting an empty queue drops it: an empty queue and none behave the same.
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, session: object, owner: type | None = None) -> asyncio.Queue[Retained]:
        if session is None:
            raise AttributeError(self.name)
        queue: asyncio.Queue[Retained] | None = vars(session).get(self.name)
        if queue is None:
            queue = vars(session)[self.name] = asyncio.Queue()
        return queue

    def __set__(self, session: object, queue: asyncio.Queue[Retained]) -> None:
        if queue.empty():
            vars(session).pop(self.name, None)
        else:
            vars(session)[self.name] = queue


class LeanSession(Session):  # type: ignore[misc]
    """amqtt's session, typed, with a :class:`SessionState` instead of a ``transitions.Machine`` (about
    13 KB, with reference cycles through bound methods, so freed only by the cyclic garbage collector)
    and its two queues made only when used (:class:`_QueueWhenNeeded`). Only the sessions kubmesh makes
    are lean: amqtt's own class is left as it is."""

    transitions: SessionState
    client_id: str | None
    clean_session: bool | None
    username: str | None
    password: str | None
    remote_address: str | None
    remote_port: int | None
    ssl_object: ssl.SSLObject | None
    keep_alive: int
    will_flag: bool
    will_topic: str | None
    will_message: bytes | bytearray | None
    will_qos: int | None
    will_retain: bool | None
    is_anonymous: bool
    last_disconnect_time: int | None
    attributes: dict[str, Any]
    inflight_in: OrderedDict[int, Incoming]
    inflight_out: OrderedDict[int, Outgoing]
    next_packet_id: int

    retained_messages = _QueueWhenNeeded()
    delivered_message_queue = _QueueWhenNeeded()

    def _init_states(self) -> None:
        self.transitions = SessionState(self)

    def has_offline_queue(self) -> bool:
        """Whether messages wait for this session, without making its queue."""
        return "retained_messages" in self.__dict__

    def clear_queues(self) -> None:
        self.__dict__.pop("retained_messages", None)
        self.__dict__.pop("delivered_message_queue", None)


class FrameHooks(Protocol):
    """What amqtt's frame asks of the broker that owns the state."""

    async def serve(self, listener: str, address: str | None, port: int,
                    ssl_context: ssl.SSLContext | None) -> asyncio.Server: ...

    def drop_subscriptions(self, session: LeanSession) -> None: ...

    def deliver(self, topic: str, data: bytes, qos: int) -> None: ...

    def store_retained(self, topic: str, data: bytes, qos: int | None) -> None: ...

    def may(self, session: LeanSession, topic: str, action: Action) -> bool: ...

    def session_dropped(self, client_id: str) -> None: ...


class AmqttFrame(Broker):  # type: ignore[misc]
    """amqtt's broker as the frame around kubmesh's state: the tables are the ones given, and every
    decision amqtt would take on a message or a session is asked of ``hooks``."""

    def __init__(
        self,
        config: dict[str, object],
        hooks: FrameHooks,
        sessions: Mapping[str, tuple[LeanSession, object]],
        subscriptions: Mapping[str, list[tuple[LeanSession, int]]],
        retained: Mapping[str, Retained],
    ) -> None:
        super().__init__(config)
        self._hooks = hooks
        self._sessions = sessions
        self._subscriptions = subscriptions
        self._retained_messages = retained

    # typed views of amqtt's configuration

    def listener_option(self, listener: str, name: str, default: int) -> int:
        return int(self.listeners_config[listener].get(name, default))

    @property
    def session_expiry_s(self) -> int | None:
        expiry = self.config.session_expiry_interval
        return None if expiry is None else int(expiry)

    def fire(self, event: BrokerEvents, **kwargs: object) -> Awaitable[None] | None:
        """A plug-in event, or None when no plug-in listens to it (so no task is made for nothing)."""
        if event not in self.plugins_manager._event_plugin_callbacks:
            return None
        fired: Awaitable[None] = self.plugins_manager.fire_event(event, **kwargs)
        return fired

    # amqtt's hooks, answered by the owner of the state

    async def _create_server_instance(
        self,
        listener_name: str,
        listener_type: ListenerType,
        address: str | None,
        port: int,
        ssl_context: ssl.SSLContext | None,
    ) -> asyncio.Server:
        if listener_type is not ListenerType.TCP:
            raise ValueError(f"listener {listener_name!r}: the broker serves MQTT over TCP or TLS")
        return await self._hooks.serve(listener_name, address, port, ssl_context)

    async def _session_monitor(self) -> None:
        """amqtt looks at every session every second to drop those of clean sessions that ended; the
        broker drops those as they end, so that walk is left to session expiry."""
        if self.config.session_expiry_interval is not None:
            await super()._session_monitor()

    async def _cleanup_session(self, client_id: str) -> None:
        self._hooks.session_dropped(client_id)
        await super()._cleanup_session(client_id)

    async def _del_all_subscriptions(self, session: LeanSession) -> None:
        self._hooks.drop_subscriptions(session)

    async def _broadcast_message(
        self, session: object, topic: str | None, data: bytes | bytearray | None, force_qos: int | None = None,
    ) -> None:
        """A plug-in's message, delivered at once; without a QoS, at the subscription's, as amqtt does."""
        if topic:
            self._hooks.deliver(topic, bytes(data or b""), 2 if force_qos is None else force_qos)

    async def retain_message(
        self, source_session: object, topic_name: str | None, data: bytes | bytearray | None,
        qos: int | None = None,
    ) -> None:
        if topic_name is not None:
            self._hooks.store_retained(topic_name, bytes(data or b""), qos)

    async def _topic_filtering(self, session: LeanSession, topic: str, action: Action) -> bool:
        return self._hooks.may(session, topic, action)


_MATCHER = types.SimpleNamespace(logger=logging.getLogger("amqtt"))


def amqtt_matches(topic: str, topic_filter: str) -> bool:
    """amqtt's own matching of a topic against a filter (``Broker._matches``)."""
    return bool(Broker._matches(_MATCHER, topic, topic_filter))


def gen_client_id() -> str:
    """A client id for a client that gave none, as amqtt makes them."""
    return str(_gen_client_id())
