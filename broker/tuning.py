"""What makes the embedded broker hold thousands of farms: its memory and Python's runtime.

Measured with ``benchmarks/fleet_latency.py``, ``broker_memory.py`` and ``connect_storm.py``
(figures in ``benchmarks/RESULTS.md``); each change below is there because a figure moved. The
per-connection and per-message path, where most of the gap to Mosquitto was (seven tasks and four
queues per client, tasks per message), is ``broker/fastpath.py``; with it, at 2,000 farms × 1
message/s the broker needs 6 % of a core (43 % before) and 5.7 KB per farm (39.4 KB).

- **ACL without tasks.** amqtt asks its topic plug-ins through one asyncio task per plug-in per
  check, and checks every publish and every delivery. ``broker.core.KubBroker.may`` asks the
  cached decision (``broker.access.AclCache``) directly.
- **Dead sessions freed.** A retained message kept a reference to the session that published
  it, so every farm that ever published a retained ``state`` kept its whole session after it
  left; the broker keeps retained messages without it (``broker.retained``).
- **Lean sessions.** Every amqtt ``Session`` builds its own ``transitions.Machine`` and two
  ``asyncio.Queue`` that a farm rarely uses: ``broker.amqtt_adapter.LeanSession`` has a small state
  object and makes its queues when first used.
- **Garbage collection for a long-lived heap.** Python's collector walks every tracked object in a
  full collection; with thousands of sessions that is a pause of half a second every few seconds.
  :class:`HeapFreezer` moves what has survived into the permanent generation (``gc.freeze``) at
  start and then periodically after a young-generation sweep, and raises the first threshold so
  that young collections are rarer.
- **Connect storms.** The listeners take a backlog of :data:`LISTEN_BACKLOG` connections instead
  of asyncio's 100, so farms reconnecting all at once after a restart are not dropped and retried
  by the kernel (``broker.core.KubBroker.serve``).
- **Event loop.** uvloop, when installed, runs the broker's sockets with less overhead than the
  stock loop (:func:`use_fast_event_loop`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging

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


class HeapFreezer:
    """Keeps the cyclic garbage collector off the broker's long-lived objects.

    Python's full collection walks every tracked object: with thousands of sessions that is a
    pause of a tenth to half a second, for nothing, since a broker in steady state makes almost
    no cyclic garbage (measured: the young collections under load find none). So, at start, one
    full collection and ``gc.freeze()``; every ``every_s``, a collection of the young generations
    only and a freeze of what survived, so full collections never walk the sessions. What leaves
    later is still freed, by reference counting: sessions hold no cycles (see
    ``broker.amqtt_adapter.SessionState``, and ``broker.retained``). Every ``sweep_every_s`` one
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
