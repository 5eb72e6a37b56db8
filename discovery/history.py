"""Extension: the history of every farm's readings, from ``state`` and ``backlog``, in SQLite (``history.db``).

A reading is stored once, keyed by farm and ``seq``: a reading replayed on ``backlog`` after it
already came live (or the retained ``state`` sent again on every subscribe) changes nothing.
Readings wait in memory until the bus commits (:meth:`HistoryRecorder.commit`, awaited before the
bus acknowledges them), then are written in one transaction on the database's writer thread. Raw
readings are kept for ``raw_days``, then folded into per-``rollup_step`` min/max/avg rows kept for
``keep_days``, on a timer of its own (the fold runs on the writer thread too). Gaps are counted from
``seq`` (:mod:`discovery.gaps`). The queries block and run on the database's reader threads.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from contract.messages import FarmMessage, Message
from contract.payloads import Clock, Reading
from contract.topics import FarmTopic, Topics
from discovery.extension import Extension, Node
from discovery.gaps import SeqRuns
from discovery.sqlite import Database

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
FIRST_TS = datetime.min.replace(tzinfo=UTC).timestamp()


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
        return {"ts": _moment(self.ts), "value": avg,
                "min": self.min, "max": self.max, "avg": avg, "count": self.count}


class HistoryRecorder(Extension):
    name = "history"

    def __init__(self, path: Path, topics: Topics, clock: Clock, retention: Retention | None = None,
                 retention_every_s: float = RETENTION_EVERY_S) -> None:
        self.topics = topics
        self.clock = clock
        self.retention = retention or Retention()
        self.retention_every_s = retention_every_s
        self.db = Database(path, SCHEMA)
        self._stored = 0
        self._pending: list[tuple[str, int, float, str]] = []
        self._retention_task: asyncio.Task[None] | None = None
        self._runs: dict[str, SeqRuns] = {}  # per farm; used on the writer thread only
        self._reports: dict[str, dict[str, Any]] = {}  # their reports, replaced whole by the writer thread

    @classmethod
    def build(cls, node: Node) -> HistoryRecorder:
        settings = node.settings
        return cls(settings.history_database, node.topics, node.clock, Retention(
            settings.history_raw_days, settings.history_rollup_seconds, settings.history_keep_days))

    # ---- the extension -----------------------------------------------------------------------------

    def filters(self) -> list[str]:
        return [self.topics.all_farms(FarmTopic.STATE), self.topics.all_farms(FarmTopic.BACKLOG)]

    async def start(self) -> None:
        self.db.open()
        self._stored = await self.db.read(self._count)  # then kept up to date by the writes
        self._retention_task = asyncio.create_task(self._retention_timer())

    async def stop(self) -> None:
        if self._retention_task is not None:
            self._retention_task.cancel()
            await asyncio.gather(self._retention_task, return_exceptions=True)
        await self.commit()
        self.db.close()

    def databases(self) -> list[Database]:
        return [self.db]

    async def on_message(self, message: Message) -> None:
        if not isinstance(message, FarmMessage) or not isinstance(message.payload, Reading):
            return  # a retained state being cleared
        reading = message.payload
        if not _storable(reading.ts):
            # stored, its time would make every later query of the farm's history fail
            log.warning("farm %s: dropped reading %d: its time %s is not a time in UTC", message.farm_id,
                        reading.seq, reading.ts.isoformat())
            return
        self._pending.append((message.farm_id, reading.seq, reading.ts.timestamp(), json.dumps(reading.values)))

    async def commit(self) -> None:
        """Write the pending readings in one transaction; a reading already stored is left as it is."""
        pending, self._pending = self._pending, []
        if pending:
            self._stored += await self.db.write(lambda db: self._insert(db, pending))

    # ---- retention ---------------------------------------------------------------------------------

    async def _retention_timer(self) -> None:
        while True:
            try:
                await self.apply_retention()
            except Exception:  # logged; retention tries again at the next tick and the history goes on
                log.exception("history retention failed")
            await asyncio.sleep(self.retention_every_s)

    async def apply_retention(self) -> None:
        """Fold raw readings older than ``raw_days`` into rollups; drop rollups older than ``keep_days``."""
        now = self.clock().timestamp()
        step = self.retention.rollup_step
        cutoff = (now - self.retention.raw_days * 86400) // step * step  # whole buckets only
        folded, expired = await self.db.write(
            lambda db: self._fold(db, step, cutoff, now - self.retention.keep_days * 86400))
        self._stored -= folded
        if folded or expired:
            log.info("history retention: %d raw reading(s) downsampled, %d old rollup(s) removed", folded, expired)

    # ---- reading (blocking: through self.db.read) ---------------------------------------------------

    def _count(self) -> int:
        return int(self.db.reader().execute("SELECT COUNT(*) FROM readings").fetchone()[0])

    def points(self, farm_id: str, name: str, start: datetime, end: datetime,
               step: float | None = None) -> list[dict[str, Any]]:
        """The value's readings between ``start`` and ``end``; with ``step``, min/max/avg per bucket."""
        span = (start.timestamp(), end.timestamp())
        path = f'$."{name}"'
        db = self.db.reader()
        raw = db.execute(
            "SELECT ts, json_extract(data, ?1) FROM readings WHERE farm_id = ?2 AND ts BETWEEN ?3 AND ?4 "
            "AND json_type(data, ?1) IS NOT NULL ORDER BY ts, seq", (path, farm_id, *span)).fetchall()
        rolled = db.execute(
            "SELECT ts, min, max, avg, count FROM rollups WHERE farm_id = ? AND name = ? AND ts BETWEEN ? AND ? "
            "ORDER BY ts", (farm_id, name, *span)).fetchall()
        if step is None:
            older = [{"ts": _moment(ts), "value": avg, "min": low, "max": high, "avg": avg, "count": count}
                     for ts, low, high, avg, count in rolled]
            return older + [{"ts": _moment(ts), "value": value} for ts, value in raw]
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

    async def gaps(self, farm_id: str) -> dict[str, Any]:
        """How many readings are stored, and how many ``seq`` numbers are missing between them (and where).

        Counted once per farm on the writer thread, then kept up to date there by every insert, so that a
        farm page costs nothing on the disk."""
        report = self._reports.get(farm_id)
        if report is None:
            report = await self.db.write(lambda db: self._count_runs(db, farm_id))
        return report

    def _count_runs(self, db: sqlite3.Connection, farm_id: str) -> dict[str, Any]:
        runs = self._runs.get(farm_id)
        if runs is None:  # a second request may have counted it while this one waited
            runs = self._runs[farm_id] = SeqRuns.counted(db, farm_id)
        self._reports[farm_id] = report = runs.report()
        return report

    def _insert(self, db: sqlite3.Connection, pending: list[tuple[str, int, float, str]]) -> int:
        """On the writer thread: store the readings, and update the summaries of the farms already counted."""
        inserted = 0
        changed: set[str] = set()
        db.execute("BEGIN")
        for row in pending:
            if db.execute("INSERT OR IGNORE INTO readings (farm_id, seq, ts, data) VALUES (?, ?, ?, ?)",
                          row).rowcount:
                inserted += 1
                farm_id, seq = row[0], row[1]
                if farm_id in self._runs:
                    self._runs[farm_id].added(db, farm_id, seq)
                    changed.add(farm_id)
        db.execute("COMMIT")
        for farm_id in changed:
            self._reports[farm_id] = self._runs[farm_id].report()
        return inserted

    def _fold(self, db: sqlite3.Connection, step: float, cutoff: float, expiry: float) -> tuple[int, int]:
        """On the writer thread: the readings older than ``cutoff`` folded into rollups, then deleted (those of
        the farms with a summary one by one, so that it stays true), and rollups older than ``expiry``."""
        db.execute("BEGIN")
        db.execute(ROLLUP, {"step": step, "cutoff": cutoff})
        folded = 0
        for farm_id, runs in self._runs.items():
            old = db.execute("SELECT seq FROM readings WHERE farm_id = ? AND ts < ?", (farm_id, cutoff)).fetchall()
            for (seq,) in old:
                runs.removed(db, farm_id, seq)
            folded += len(old)
            if old:
                self._reports[farm_id] = runs.report()
        folded += db.execute("DELETE FROM readings WHERE ts < ?", (cutoff,)).rowcount
        expired = db.execute("DELETE FROM rollups WHERE ts < ?", (expiry,)).rowcount
        db.execute("COMMIT")
        return folded, int(expired)


def _moment(ts: float) -> datetime:
    # a bucket of a reading in year 1 may start before it: shown from the first moment there is
    return datetime.fromtimestamp(max(ts, FIRST_TS), UTC)


def _storable(moment: datetime) -> bool:
    """Whether the history can serve a reading of this time: one that exists in UTC (years 1 to 9999)."""
    try:
        moment.astimezone(UTC)
    except OverflowError:
        return False
    return True
