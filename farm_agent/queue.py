"""Store-and-forward: every reading waits on disk until the broker has acknowledged it.

A reading gets its ``seq`` and its row in the queue in one transaction, before it is published;
it leaves the queue only after its PUBACK. What the broker never acknowledged (the link was down,
the agent was killed) is replayed on ``backlog`` after the next connect. The queue is bounded by
count and by age; when a bound is reached the oldest readings go, and the loss is counted so that
the agent reports it in ``heartbeat`` and ``events``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from contract.payloads import Clock, Reading, encode, utc_now
from farm_agent.store import AgentStore

log = logging.getLogger("kubmesh.agent.queue")

SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (seq INTEGER PRIMARY KEY, ts REAL NOT NULL, payload BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS queue_ts ON queue (ts);
"""
DROPPED = "dropped"  # readings dropped by the bounds, ever
DROPPED_REPORTED = "dropped_reported"  # of which an ``events`` message has told


@dataclass(frozen=True)
class Queued:
    seq: int
    payload: bytes  # the encoded Reading, published as it was read


class ReadingQueue:
    def __init__(self, store: AgentStore, max_readings: int, max_age_s: float, clock: Clock = utc_now) -> None:
        self.store = store
        self.max_readings = max_readings
        self.max_age = timedelta(seconds=max_age_s)
        self.clock = clock
        store.db.executescript(SCHEMA)
        self._length = int(store.db.execute("SELECT COUNT(*) FROM queue").fetchone()[0])

    def __len__(self) -> int:
        return self._length

    def add(self, build: Callable[[int], Reading]) -> tuple[Reading, int]:
        """Number a new reading, queue it and apply the bounds; returns it and how many old ones went."""
        with self.store.transaction() as db:
            reading = build(self.store.next_seq())
            db.execute("INSERT INTO queue (seq, ts, payload) VALUES (?, ?, ?)",
                       (reading.seq, reading.ts.timestamp(), encode(reading)))
            self._length += 1
            dropped = self._apply_bounds()
            if dropped:
                self.store.add(DROPPED, dropped)
        if dropped:
            log.warning("backlog bound reached: dropped the %d oldest reading(s)", dropped)
        return reading, dropped

    def _apply_bounds(self) -> int:
        db = self.store.db
        cutoff = (self.clock() - self.max_age).timestamp()
        dropped = db.execute("DELETE FROM queue WHERE ts < ?", (cutoff,)).rowcount
        self._length -= dropped
        excess = self._length - self.max_readings
        if excess > 0:
            db.execute("DELETE FROM queue WHERE seq IN (SELECT seq FROM queue ORDER BY seq LIMIT ?)", (excess,))
            self._length -= excess
            dropped += excess
        return dropped

    def oldest(self, below: int, limit: int) -> list[Queued]:
        """Up to ``limit`` queued readings numbered below ``below``, oldest first."""
        rows = self.store.db.execute(
            "SELECT seq, payload FROM queue WHERE seq < ? ORDER BY seq LIMIT ?", (below, limit)
        ).fetchall()
        return [Queued(int(seq), bytes(payload)) for seq, payload in rows]

    def remove(self, seqs: Sequence[int]) -> None:
        """Acknowledged by the broker: these readings are no longer ours to keep."""
        if not seqs:
            return
        marks = ",".join("?" * len(seqs))
        removed = self.store.db.execute(f"DELETE FROM queue WHERE seq IN ({marks})", list(seqs)).rowcount
        self._length -= removed

    @property
    def next_seq(self) -> int:
        """The number the next reading will get: everything queued is below it."""
        return self.store.last_seq() + 1

    @property
    def dropped(self) -> int:
        return self.store.get(DROPPED)

    def unreported_drops(self) -> int:
        return self.dropped - self.store.get(DROPPED_REPORTED)

    def drops_reported(self, count: int) -> None:
        self.store.add(DROPPED_REPORTED, count)
