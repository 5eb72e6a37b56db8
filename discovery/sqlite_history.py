"""The history in SQLite (``history.db``): one table of raw readings keyed by (farm, seq), one of rollups.

The farm page's gap summary is counted once per farm on the writer thread, then kept up to date there by
every insert and every fold (:mod:`discovery.gaps`), so that a farm page costs nothing on the disk. That
holds because this node is the only writer of the file; so do the committed marks (table ``committed``), kept
in memory on the writer thread and moved in the transaction of the inserts.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from discovery.gaps import SeqRuns
from discovery.sqlite import SqliteDatabase
from discovery.storage import HistoryStore, Pending, Written, advance, held_mark

SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    farm_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts REAL NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (farm_id, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS readings_ts ON readings (farm_id, ts);
CREATE TABLE IF NOT EXISTS committed (
    farm_id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
) WITHOUT ROWID;
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


class SqliteHistory(HistoryStore):
    def __init__(self, path: Path) -> None:
        self.db = SqliteDatabase(path, SCHEMA)
        self._runs: dict[str, SeqRuns] = {}  # per farm; used on the writer thread only
        self._reports: dict[str, dict[str, Any]] = {}  # their reports, replaced whole by the writer thread
        self._marks: dict[str, int] | None = None  # per farm; used on the writer thread only, read at the first insert

    async def insert(self, pending: Sequence[Pending], now: datetime,
                     held_from: Mapping[str, int] | None = None) -> Written:
        return await self.db.write(lambda db: self._insert(db, pending, held_from or {}))

    def marks(self) -> dict[str, int]:
        return {farm_id: int(seq) for farm_id, seq in self.db.reader().execute("SELECT farm_id, seq FROM committed")}

    async def gaps(self, farm_id: str) -> dict[str, Any]:
        report = self._reports.get(farm_id)
        if report is None:
            report = await self.db.write(lambda db: self._count_runs(db, farm_id))
        return report

    async def fold(self, step: float, cutoff: float, expiry: float) -> tuple[int, int]:
        return await self.db.write(lambda db: self._fold(db, step, cutoff, expiry))

    def count(self) -> int:
        return int(self.db.reader().execute("SELECT COUNT(*) FROM readings").fetchone()[0])

    def points(self, farm_id: str, name: str, start: float, end: float) -> tuple[list[Any], list[Any]]:
        path = f'$."{name}"'
        db = self.db.reader()
        raw = db.execute(
            "SELECT ts, json_extract(data, ?1) FROM readings WHERE farm_id = ?2 AND ts BETWEEN ?3 AND ?4 "
            "AND json_type(data, ?1) IS NOT NULL ORDER BY ts, seq", (path, farm_id, start, end)).fetchall()
        rolled = db.execute(
            "SELECT ts, min, max, avg, count FROM rollups WHERE farm_id = ? AND name = ? AND ts BETWEEN ? AND ? "
            "ORDER BY ts", (farm_id, name, start, end)).fetchall()
        return raw, rolled

    def seqs(self, farm_id: str) -> list[int]:
        rows = self.db.reader().execute("SELECT seq FROM readings WHERE farm_id = ? ORDER BY seq", (farm_id,))
        return [seq for (seq,) in rows]

    # ---- on the writer thread ----------------------------------------------------------------------

    def _count_runs(self, db: sqlite3.Connection, farm_id: str) -> dict[str, Any]:
        runs = self._runs.get(farm_id)
        if runs is None:  # a second request may have counted it while this one waited
            runs = self._runs[farm_id] = SeqRuns.counted(db, farm_id)
        self._reports[farm_id] = report = runs.report()
        return report

    def _insert(self, db: sqlite3.Connection, pending: Sequence[Pending], held_from: Mapping[str, int]) -> Written:
        """Store the readings, update the summaries of the farms already counted and move the committed marks,
        all in one transaction."""
        if self._marks is None:
            self._marks = {farm_id: int(seq) for farm_id, seq in db.execute("SELECT farm_id, seq FROM committed")}
        marks = self._marks
        inserted = 0
        changed: set[str] = set()
        repeated: set[str] = set()
        moved: dict[str, int] = {}
        db.execute("BEGIN")  # a failure rolls back on the writer thread (SqliteDatabase)
        for row in pending:
            farm_id, seq = row[0], row[1]
            if seq <= marks.get(farm_id, 0):
                repeated.add(farm_id)  # the farm may have missed its mark
            if db.execute("INSERT OR IGNORE INTO readings (farm_id, seq, ts, data) VALUES (?, ?, ?, ?)",
                          row).rowcount:
                inserted += 1
                if farm_id in self._runs:
                    self._runs[farm_id].added(db, farm_id, seq)
                    changed.add(farm_id)
        for farm_id in sorted({row[0] for row in pending} | set(held_from)):
            before = marks.get(farm_id, 0)
            mark = advance(db, "?", farm_id, held_mark(before, held_from, farm_id))
            if mark != before:
                db.execute("INSERT INTO committed (farm_id, seq) VALUES (?, ?) ON CONFLICT (farm_id) "
                           "DO UPDATE SET seq = MAX(committed.seq, excluded.seq)", (farm_id, mark))
                moved[farm_id] = mark
        db.execute("COMMIT")
        marks.update(moved)
        for farm_id in changed:
            self._reports[farm_id] = self._runs[farm_id].report()
        return Written(inserted, moved, repeated)

    def _fold(self, db: sqlite3.Connection, step: float, cutoff: float, expiry: float) -> tuple[int, int]:
        """The readings older than ``cutoff`` folded into rollups, then deleted (those of the farms with a
        summary one by one, so that it stays true), and rollups older than ``expiry``."""
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
