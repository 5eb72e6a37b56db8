"""Plug-in: the history of every farm's readings, from ``state`` and ``backlog``, in SQLite.

A reading is stored once, keyed by farm and ``seq``: a reading replayed on ``backlog`` after it
already came live (or the retained ``state`` sent again on every subscribe) changes nothing.
Writes are batched: readings wait in memory until the bus commits (it acknowledges the messages
only after :meth:`HistoryRecorder.flush`), or until ``batch`` of them are pending. Raw readings
are kept for ``raw_days``, then folded into per-``rollup_step`` min/max/avg rows kept for
``keep_days``. Gaps are counted from ``seq``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from contract.payloads import Clock, PayloadError, Reading, decode, format_ts
from contract.topics import FarmTopic, InvalidTopic, Topics
from discovery.sqlite import connect

log = logging.getLogger("kubmesh.discovery.history")

SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    farm_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts REAL NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (farm_id, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS readings_ts ON readings (farm_id, ts);
CREATE TABLE IF NOT EXISTS rollups (
    farm_id TEXT NOT NULL,
    name TEXT NOT NULL,
    ts REAL NOT NULL,
    min REAL, max REAL, avg REAL,
    count INTEGER NOT NULL,
    PRIMARY KEY (farm_id, name, ts)
) WITHOUT ROWID;
"""
ROLLUP = """
INSERT INTO rollups (farm_id, name, ts, min, max, avg, count)
SELECT farm_id, j.key, CAST(ts / :step AS INTEGER) * :step, MIN(j.value), MAX(j.value), AVG(j.value), COUNT(*)
FROM readings, json_each(readings.data) AS j
WHERE ts < :cutoff AND j.type IN ('integer', 'real')
GROUP BY farm_id, j.key, CAST(ts / :step AS INTEGER)
ON CONFLICT (farm_id, name, ts) DO UPDATE SET
    min = MIN(rollups.min, excluded.min),
    max = MAX(rollups.max, excluded.max),
    avg = (rollups.avg * rollups.count + excluded.avg * excluded.count) / (rollups.count + excluded.count),
    count = rollups.count + excluded.count
"""
RETENTION_EVERY_S = 3600.0


@dataclass(frozen=True)
class Retention:
    raw_days: float = 30.0
    rollup_step: float = 300.0  # seconds per downsampled row
    keep_days: float = 365.0


@dataclass
class Bucket:
    """Readings of one value within one step: what a chart draws for it."""

    ts: float
    min: float
    max: float
    total: float
    count: int

    def add(self, low: float, high: float, mean: float, count: int) -> None:
        self.min, self.max = min(self.min, low), max(self.max, high)
        self.total += mean * count
        self.count += count

    def point(self) -> dict[str, Any]:
        avg = self.total / self.count
        return {"ts": _iso(self.ts), "value": avg,
                "min": self.min, "max": self.max, "avg": avg, "count": self.count}


class HistoryRecorder:
    def __init__(self, path: Path, topics: Topics, clock: Clock, retention: Retention | None = None,
                 batch: int = 500) -> None:
        self.topics = topics
        self.clock = clock
        self.retention = retention or Retention()
        self.batch = batch
        self._db = connect(path)
        self._db.executescript(SCHEMA)
        self._stored = int(self._db.execute("SELECT COUNT(*) FROM readings").fetchone()[0])  # kept up to date after
        self._lock = threading.Lock()
        self._pending: list[tuple[str, int, float, str]] = []
        self._retention_due = 0.0

    # ---- the plug-in -----------------------------------------------------------------------------------

    def subscriptions(self) -> list[str]:
        return [self.topics.all_farms(FarmTopic.STATE), self.topics.all_farms(FarmTopic.BACKLOG)]

    async def on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        if not payload:
            return  # a retained state being cleared
        try:
            farm_id = self.topics.parse(topic).farm_id
            reading = decode(Reading, payload)
        except (InvalidTopic, PayloadError) as exc:
            log.warning("dropped a reading on %s: %s", topic, exc)
            return
        self._pending.append((farm_id, reading.seq, reading.ts.timestamp(), json.dumps(reading.values)))
        if len(self._pending) >= self.batch:
            self.flush()

    # ---- writing -----------------------------------------------------------------------------------

    def flush(self) -> None:
        """Write the pending readings in one transaction; a reading already stored is left as it is."""
        pending, self._pending = self._pending, []
        with self._lock:
            if pending:
                self._db.execute("BEGIN")
                inserted = self._db.executemany(
                    "INSERT OR IGNORE INTO readings (farm_id, seq, ts, data) VALUES (?, ?, ?, ?)", pending).rowcount
                self._db.execute("COMMIT")
                self._stored += inserted
            if time.monotonic() >= self._retention_due:
                self._retention_due = time.monotonic() + RETENTION_EVERY_S
                self._apply_retention()

    def _apply_retention(self) -> None:
        """Fold raw readings older than ``raw_days`` into rollups; drop rollups older than ``keep_days``."""
        now = self.clock().timestamp()
        step = self.retention.rollup_step
        cutoff = (now - self.retention.raw_days * 86400) // step * step  # whole buckets only
        self._db.execute("BEGIN")
        self._db.execute(ROLLUP, {"step": step, "cutoff": cutoff})
        folded = self._db.execute("DELETE FROM readings WHERE ts < ?", (cutoff,)).rowcount
        self._stored -= folded
        expired = self._db.execute("DELETE FROM rollups WHERE ts < ?",
                                   (now - self.retention.keep_days * 86400,)).rowcount
        self._db.execute("COMMIT")
        if folded or expired:
            log.info("history retention: %d raw reading(s) downsampled, %d old rollup(s) removed", folded, expired)

    # ---- reading -----------------------------------------------------------------------------------

    def points(self, farm_id: str, name: str, start: datetime, end: datetime,
               step: float | None = None) -> list[dict[str, Any]]:
        """The value's readings between ``start`` and ``end``; with ``step``, min/max/avg per bucket."""
        self.flush()
        span = (start.timestamp(), end.timestamp())
        path = f'$."{name}"'
        with self._lock:
            raw = self._db.execute(
                "SELECT ts, json_extract(data, ?1) FROM readings WHERE farm_id = ?2 AND ts BETWEEN ?3 AND ?4 "
                "AND json_type(data, ?1) IS NOT NULL ORDER BY ts, seq", (path, farm_id, *span)).fetchall()
            rolled = self._db.execute(
                "SELECT ts, min, max, avg, count FROM rollups WHERE farm_id = ? AND name = ? AND ts BETWEEN ? AND ? "
                "ORDER BY ts", (farm_id, name, *span)).fetchall()
        if step is None:
            older = [{"ts": _iso(ts), "value": avg, "min": low, "max": high, "avg": avg, "count": count}
                     for ts, low, high, avg, count in rolled]
            return older + [{"ts": _iso(ts), "value": value} for ts, value in raw]
        buckets: dict[float, Bucket] = {}
        samples = [(ts, low, high, avg, count) for ts, low, high, avg, count in rolled]
        samples += [(ts, value, value, value, 1) for ts, value in raw if isinstance(value, int | float)]
        for ts, low, high, avg, count in samples:
            key = ts // step * step
            bucket = buckets.setdefault(key, Bucket(key, low, high, 0.0, 0))
            bucket.add(low, high, avg, count)
        return [buckets[key].point() for key in sorted(buckets)]

    def size(self) -> int:
        """Raw readings stored (for metrics): counted once at start, then kept by the writes."""
        return self._stored

    def gaps(self, farm_id: str) -> dict[str, Any]:
        """How many readings are stored, and how many ``seq`` numbers are missing between them (and where)."""
        self.flush()
        with self._lock:
            count, first, last = self._db.execute(
                "SELECT COUNT(*), MIN(seq), MAX(seq) FROM readings WHERE farm_id = ?", (farm_id,)).fetchone()
            # a gap begins after every stored seq whose successor is missing (the last one excepted)
            gaps = self._db.execute(
                "SELECT COUNT(*) FROM readings AS r WHERE farm_id = ? AND seq < ? AND NOT EXISTS "
                "(SELECT 1 FROM readings WHERE farm_id = r.farm_id AND seq = r.seq + 1)", (farm_id, last),
            ).fetchone()[0] if count else 0
        missing = last - first + 1 - count if count else 0  # seq is the key: each one stored at most once
        return {"readings": count, "first_seq": first, "last_seq": last, "gaps": gaps, "missing": missing}

    def close(self) -> None:
        self.flush()
        self._db.close()


def _iso(ts: float) -> str:
    return format_ts(datetime.fromtimestamp(ts, UTC))

