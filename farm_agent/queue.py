"""Store-and-forward: every reading waits on disk until the history has confirmed it.

A reading gets its ``seq`` and its row in the queue in one transaction, before it is published;
it leaves the queue only when the discovery node's committed mark covers it (:meth:`confirm`), not on
the broker's PUBACK: a broker drops what it acknowledged when no subscriber is there to take it.
What the history never confirmed (the link was down, the agent was killed, the broker or the discovery
node restarted) is sent again on ``backlog``. The queue is bounded by
count and by age; when a bound is reached the oldest readings go, and the loss is counted so that
the agent reports it in ``heartbeat`` and ``events``.

When the data dir cannot be written (a full disk, an I/O error), the queue goes on in memory: new
readings, and the acknowledgements of readings already on disk, are kept in a bounded buffer and
``storage_error`` says why. :meth:`ReadingQueue.persist` writes them all in one transaction once
the disk takes writes again; until then the counters live in memory, and the numbering in a mark
the store writes over itself in place, so a crash in that state loses what only memory held but a
restart never gives a number twice.
"""

from __future__ import annotations

import logging
import sqlite3
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
SEQ = "seq"  # the last number given to a reading
DROPPED = "dropped"  # readings dropped by the bounds, ever
DROPPED_REPORTED = "dropped_reported"  # of which an ``events`` message has told


@dataclass(frozen=True)
class Queued:
    seq: int
    payload: bytes  # the encoded Reading, published as it was read
    ts: float = 0.0  # when it was read (epoch seconds), for the age bound


@dataclass(frozen=True)
class Added:
    reading: Reading
    queued: Queued  # its bytes, encoded once: these go on the wire
    dropped: int  # old readings the bounds pushed out to make room


class ReadingQueue:
    def __init__(self, store: AgentStore, max_readings: int, max_age_s: float, clock: Clock = utc_now,
                 max_memory: int = 2000) -> None:
        self.store = store
        self.max_readings = max_readings
        self.max_age = timedelta(seconds=max_age_s)
        self.clock = clock
        self.max_memory = max_memory
        store.db.executescript(SCHEMA)
        self._on_disk = int(store.db.execute("SELECT COUNT(*) FROM queue").fetchone()[0])
        self._seq = max(store.get(SEQ), store.marked_seq())  # the mark is ahead after a crash on a full disk
        self._dropped = store.get(DROPPED)
        self._reported = store.get(DROPPED_REPORTED)
        self._memory: dict[int, Queued] = {}  # readings the disk refused, oldest first
        self._acked_on_disk: set[int] = set()  # rows acknowledged while the disk refused their DELETE
        self.storage_error: str | None = None  # why the queue is in memory; None while the disk takes writes

    def __len__(self) -> int:
        return self._on_disk - len(self._acked_on_disk) + len(self._memory)

    @property
    def in_memory(self) -> int:
        """Readings held only in memory, waiting for the disk."""
        return len(self._memory)

    def add(self, build: Callable[[int], Reading]) -> Added:
        """Number a new reading, queue it and apply the bounds; returns it, its bytes and how many old ones went."""
        reading = build(self._seq + 1)
        queued = Queued(reading.seq, encode(reading), reading.ts.timestamp())
        self._seq = reading.seq
        dropped = 0
        if self.storage_error is None:
            try:
                with self.store.transaction() as db:
                    db.execute("INSERT INTO queue (seq, ts, payload) VALUES (?, ?, ?)",
                               (queued.seq, queued.ts, queued.payload))
                    self.store.set(SEQ, self._seq)
                    by_age, by_count = self._apply_disk_bounds(self._on_disk + 1)
                    dropped = by_age + by_count
                    if dropped:
                        self.store.set(DROPPED, self._dropped + dropped)
            except sqlite3.Error as exc:
                self._refused(exc)
                dropped = 0
            else:
                self._on_disk += 1 - dropped
        if self.storage_error is not None:
            self.store.mark_seq(queued.seq)
            self._memory[queued.seq] = queued
            dropped = self._apply_memory_bound()
        self._dropped += dropped
        if dropped:
            log.warning("backlog bound reached: dropped the %d oldest reading(s)", dropped)
        return Added(reading, queued, dropped)

    def _apply_disk_bounds(self, rows: int) -> tuple[int, int]:
        """Delete what is older than the age bound, then the oldest beyond the count bound (in a transaction)."""
        db = self.store.db
        cutoff = (self.clock() - self.max_age).timestamp()
        by_age = db.execute("DELETE FROM queue WHERE ts < ?", (cutoff,)).rowcount
        by_count = max(0, rows - by_age - self.max_readings)
        if by_count:
            db.execute("DELETE FROM queue WHERE seq IN (SELECT seq FROM queue ORDER BY seq LIMIT ?)", (by_count,))
        return by_age, by_count

    def _apply_memory_bound(self) -> int:
        excess = max(0, len(self._memory) - self.max_memory)
        for seq in list(self._memory)[:excess]:
            del self._memory[seq]
        return excess

    def oldest(self, below: int, limit: int, after: int = 0) -> list[Queued]:
        """Up to ``limit`` queued readings numbered above ``after`` and below ``below``, oldest first."""
        rows = self.store.db.execute(
            "SELECT seq, payload, ts FROM queue WHERE seq > ? AND seq < ? ORDER BY seq LIMIT ?",
            (after, below, limit + len(self._acked_on_disk)),
        ).fetchall()
        found = [Queued(int(seq), bytes(payload), float(ts)) for seq, payload, ts in rows
                 if seq not in self._acked_on_disk][:limit]
        found += [queued for seq, queued in self._memory.items() if after < seq < below][: limit - len(found)]
        return found

    @property
    def held_from(self) -> int:
        """The oldest seq still held (the next seq when none is): every reading below it has left the queue."""
        oldest = self.oldest(self.next_seq, 1)
        return oldest[0].seq if oldest else self.next_seq

    def confirm(self, through: int) -> int:
        """Stored by the history: every reading numbered ``through`` or lower leaves the queue; returns how many."""
        before = len(self)
        for seq in [seq for seq in self._memory if seq <= through]:
            del self._memory[seq]
        if self.storage_error is None:
            try:
                self._on_disk -= self.store.db.execute("DELETE FROM queue WHERE seq <= ?", (through,)).rowcount
                return before - len(self)
            except sqlite3.Error as exc:
                self._refused(exc)
        present = self.store.db.execute("SELECT seq FROM queue WHERE seq <= ?", (through,)).fetchall()
        self._acked_on_disk.update(int(seq) for (seq,) in present)
        return before - len(self)

    def remove(self, seqs: Sequence[int]) -> None:
        """These readings are no longer ours to keep."""
        on_disk = [seq for seq in seqs if self._memory.pop(seq, None) is None and seq not in self._acked_on_disk]
        if not on_disk:
            return
        marks = ",".join("?" * len(on_disk))
        if self.storage_error is None:
            try:
                self._on_disk -= self.store.db.execute(f"DELETE FROM queue WHERE seq IN ({marks})", on_disk).rowcount
                return
            except sqlite3.Error as exc:
                self._refused(exc)
        present = self.store.db.execute(f"SELECT seq FROM queue WHERE seq IN ({marks})", on_disk).fetchall()
        self._acked_on_disk.update(int(seq) for (seq,) in present)

    def persist(self) -> bool:
        """Write what memory holds to the disk, all or nothing; True when the queue is on disk again."""
        if self.storage_error is None:
            return True
        memory = list(self._memory.values())
        try:
            with self.store.transaction() as db:
                acked = sorted(self._acked_on_disk)
                removed = db.execute(f"DELETE FROM queue WHERE seq IN ({','.join('?' * len(acked))})",
                                     acked).rowcount if acked else 0
                db.executemany("INSERT OR REPLACE INTO queue (seq, ts, payload) VALUES (?, ?, ?)",
                               [(queued.seq, queued.ts, queued.payload) for queued in memory])
                rows = self._on_disk - removed + len(memory)
                by_age, by_count = self._apply_disk_bounds(rows)
                self.store.set(SEQ, self._seq)
                self.store.set(DROPPED, self._dropped + by_age + by_count)
                self.store.set(DROPPED_REPORTED, self._reported)
        except sqlite3.Error as exc:
            self.storage_error = _reason(exc)
            return False
        self._on_disk = rows - by_age - by_count
        self._dropped += by_age + by_count
        self._memory.clear()
        self._acked_on_disk.clear()
        self.storage_error = None
        return True

    def _refused(self, exc: sqlite3.Error) -> None:
        """From now on the queue is in memory (the agent logs and reports the change, once)."""
        self.storage_error = _reason(exc)

    @property
    def next_seq(self) -> int:
        """The number the next reading will get: everything queued is below it."""
        return self._seq + 1

    @property
    def dropped(self) -> int:
        return self._dropped

    def unreported_drops(self) -> int:
        return self._dropped - self._reported

    def drops_reported(self, count: int) -> None:
        self._reported += count
        if self.storage_error is None:
            try:
                self.store.set(DROPPED_REPORTED, self._reported)
            except sqlite3.Error as exc:
                self._refused(exc)


def _reason(exc: sqlite3.Error) -> str:
    return str(exc) or type(exc).__name__
