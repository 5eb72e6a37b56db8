"""What makes amqtt 0.12.1 hold thousands of farms: its memory and Python's runtime.

Measured with ``benchmarks/fleet_latency.py``, ``broker_memory.py`` and ``connect_storm.py``
(figures in ``benchmarks/RESULTS.md``); each change below is there because a figure moved. The
per-connection and per-message path, where most of the gap to Mosquitto was (seven tasks and four
queues per client, tasks per message), is ``broker/fastpath.py``; with it, at 2,000 farms × 1
message/s the broker needs 6 % of a core (43 % before) and 5.7 KB per farm (39.4 KB).

- **ACL without tasks.** amqtt asks its topic plug-ins through one asyncio task per plug-in per
  check, and checks every publish and every delivery. :class:`TunedBroker` calls the ACL
  plug-in's cached decision (``broker.plugins.AclCache``) directly (:meth:`TunedBroker.may`).
- **Dead sessions freed.** A retained message kept a reference to the session that published
  it, so every farm that ever published a retained ``state`` kept its whole session after it
  left; the broker keeps retained messages without it (``FastPathBroker.store_retained``).
- **Lean sessions.** Every amqtt ``Session`` builds its own ``transitions.Machine`` (about 13 KB,
  with reference cycles through bound methods, so freed only by the cyclic garbage collector):
  :func:`patch_session_state` gives sessions a small state object with the same interface. And
  two ``asyncio.Queue`` (some 6 KB together) that a farm rarely uses: :class:`LeanSession` makes
  them when first used.
- **Garbage collection for a long-lived heap.** Python's collector walks every tracked object in a
  full collection; with thousands of sessions that is a pause of half a second every few seconds.
  :class:`HeapFreezer` moves what has survived into the permanent generation (``gc.freeze``) at
  start and then periodically after a young-generation sweep, and raises the first threshold so
  that young collections are rarer.
- **Connect storms.** The listeners take a backlog of :data:`LISTEN_BACKLOG` connections instead
  of asyncio's 100, so farms reconnecting all at once after a restart are not dropped and retried
  by the kernel (``FastPathBroker._create_server_instance``).
- **Event loop.** uvloop, when installed, runs the broker's sockets with less overhead than the
  stock loop (:func:`use_fast_event_loop`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import weakref
from typing import Any, ClassVar

from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.session import Session
from transitions import MachineError

from broker.plugins import TopicAclPlugin

log = logging.getLogger("kubmesh.broker")

GC_THRESHOLDS = (5_000, 20, 20)
FREEZE_EVERY_S = 10.0
FULL_SWEEP_EVERY_S = 3600.0
LISTEN_BACKLOG = 4096  # the kernel caps it at net.core.somaxconn


def use_fast_event_loop() -> str:
    """Install uvloop's event loop policy when uvloop is there; returns the loop's name."""
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


class SessionState:
    """The part of ``transitions.Machine`` amqtt uses on a session: ``state``, ``connect``,
    ``disconnect``, ``is_connected``; the same moves, the same errors, the same enter callbacks."""

    __slots__ = ("_session", "state")

    _MOVES: ClassVar[dict[str, dict[str, str]]] = {
        "connect": {"new": "connected", "disconnected": "connected"},
        "disconnect": {"connected": "disconnected", "new": "disconnected", "disconnected": "disconnected"},
    }

    def __init__(self, session: Session) -> None:
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


def _lean_init_states(self: Session) -> None:
    self.transitions = SessionState(self)


def patch_session_state() -> None:
    """Every amqtt session from now on gets a :class:`SessionState` instead of a ``transitions.Machine``."""
    Session._init_states = _lean_init_states


class _QueueWhenNeeded:
    """A session's message queue, made when first used and dropped again while empty.

    An empty ``asyncio.Queue`` holds four deques, about 3 KB; every amqtt session has two, and a
    farm's session rarely needs either (the offline queue of a persistent session, the stock
    handler's delivery queue). Setting an empty queue drops it: an empty queue and none behave the same.
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, session: Session | None, owner: type | None = None) -> Any:
        if session is None:
            return self
        queue = session.__dict__.get(self.name)
        if queue is None:
            queue = session.__dict__[self.name] = asyncio.Queue()
        return queue

    def __set__(self, session: Session, queue: asyncio.Queue[Any]) -> None:
        if queue.empty():
            session.__dict__.pop(self.name, None)
        else:
            session.__dict__[self.name] = queue


class LeanSession(Session):
    """amqtt's session with its two queues made only when used (:class:`_QueueWhenNeeded`)."""

    retained_messages = _QueueWhenNeeded()
    delivered_message_queue = _QueueWhenNeeded()

    def clear_queues(self) -> None:
        self.__dict__.pop("retained_messages", None)
        self.__dict__.pop("delivered_message_queue", None)


class HeapFreezer:
    """Keeps the cyclic garbage collector off the broker's long-lived objects.

    Python's full collection walks every tracked object: with thousands of sessions that is a
    pause of a tenth to half a second, for nothing, since a broker in steady state makes almost
    no cyclic garbage (measured: the young collections under load find none). So, at start, one
    full collection and ``gc.freeze()``; every ``every_s``, a collection of the young generations
    only and a freeze of what survived, so full collections never walk the sessions. What leaves
    later is still freed, by reference counting: sessions hold no cycles (see
    :func:`patch_session_state`, and ``FastPathBroker.store_retained``). Every ``sweep_every_s`` one
    full collection over everything, frozen or not, bounds what an unforeseen cycle could hold.
    """

    def __init__(
        self,
        every_s: float = FREEZE_EVERY_S,
        sweep_every_s: float = FULL_SWEEP_EVERY_S,
        thresholds: tuple[int, int, int] = GC_THRESHOLDS,
    ) -> None:
        self.every_s = every_s
        self.sweep_every_s = sweep_every_s
        self.thresholds = thresholds
        self._task: asyncio.Task[None] | None = None
        self._previous: tuple[int, int, int] | None = None

    def start(self) -> None:
        self._previous = gc.get_threshold()
        gc.set_threshold(*self.thresholds)
        self.sweep()
        self._task = asyncio.create_task(self._run(), name="gc-freezer")

    @staticmethod
    def freeze_survivors() -> None:
        gc.collect(1)
        gc.freeze()

    @staticmethod
    def sweep() -> int:
        gc.unfreeze()
        collected = gc.collect()
        gc.freeze()
        return collected

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_sweep = loop.time() + self.sweep_every_s
        while True:
            await asyncio.sleep(self.every_s)
            if loop.time() >= next_sweep:
                log.info("full garbage collection: %d objects freed", self.sweep())
                next_sweep = loop.time() + self.sweep_every_s
            else:
                self.freeze_survivors()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        gc.unfreeze()
        if self._previous is not None:
            gc.set_threshold(*self._previous)


class TunedBroker(Broker):
    """amqtt's broker with the ACL checked without tasks, lean session state and the heap kept frozen."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        patch_session_state()
        super().__init__(*args, **kwargs)
        self.heap = HeapFreezer()
        topic_plugins = [p for p in self.plugins_manager.plugins if hasattr(p, "topic_filtering")]
        only = topic_plugins[0] if len(topic_plugins) == 1 else None
        self._acl: TopicAclPlugin | None = only if isinstance(only, TopicAclPlugin) else None

    async def start(self) -> None:
        await super().start()
        self.heap.start()

    async def shutdown(self) -> None:
        await self.heap.stop()
        await super().shutdown()

    async def _topic_filtering(self, session: Session, topic: str, action: Action) -> bool:
        if self._acl is None:
            return await super()._topic_filtering(session, topic, action)
        return self._acl.check(session, topic, action)

    def may(self, session: Session, topic: str, action: Action) -> bool:
        """The ACL's decision without a task; every topic is allowed when no topic plug-in is configured."""
        if self._acl is not None:
            return self._acl.check(session, topic, action)
        return not self.plugins_manager.is_topic_filtering_enabled()
