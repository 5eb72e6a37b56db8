"""The history on PostgreSQL: raw readings partitioned by day, rollups by week (declarative partitioning),
written a batch at a time in one multi-row ``INSERT ... SELECT FROM unnest(...)``, retention by partition.

- A reading's partition is made when the first reading of its day arrives (under an advisory lock, so two
  nodes make it once), for the days of the raw window (``raw_days`` back to tomorrow); a reading of any other
  time goes to the default partition, so a wrong clock cannot make thousands of tables.
- Retention folds every partition wholly older than the cut-off into rollups and drops it; only the partition
  that straddles the cut-off (and the default one) give up their older rows by ``DELETE``. Rollups past
  ``keep_days`` go the same way.
- The farm page's gap summary is merged from each day's runs of consecutive ``seq`` (islands), counted by the
  server per partition. A day's runs are kept in memory while they hold: until this node writes a reading of
  that farm into that day, and at most ``DAY_RUNS_KEEP_S``, so that a reading another node stored and this one
  never received (its session lost) shows within that bound. The oldest partition (the one retention may be
  deleting rows from, on whichever node holds the lease) and the default one are counted for every request,
  and a dropped partition leaves the summary with the catalog. Several nodes write, so none can keep the
  whole summary up to date from its own writes as SQLite's store does.
- The committed marks (table ``committed``) are moved in the transaction of the inserts, from the mark as
  stored: every node stores every reading and may move a farm's mark, so none keeps it in memory, and the
  mark is only ever raised (``GREATEST``). A node that walks past readings another node's open transaction
  has not yet committed stops short; the next insert or heartbeat of the farm moves it on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from discovery.gaps import SeqRuns
from discovery.postgres.database import PostgresDatabase
from discovery.storage import MARK_WALK, HistoryStore, Pending, Written, advance, held_mark

DAY = 86400.0
PERIODS = {"readings": DAY, "rollups": 7 * DAY}  # seconds per partition
PARTITION_LOCK = 0x6B75626D70617274  # "kubmpart"
INSERT = """
INSERT INTO readings (farm_id, seq, ts, data)
SELECT farm_id, seq, ts, data::jsonb FROM unnest(%s::text[], %s::bigint[], %s::float8[], %s::text[])
    AS batch (farm_id, seq, ts, data)
ON CONFLICT DO NOTHING
"""
# trunc(), as SQLite's CAST(... AS INTEGER): the two stores put a reading in the same bucket
ROLLUP = """
INSERT INTO rollups (farm_id, name, ts, min, max, avg, count)
SELECT r.farm_id, j.key, trunc(r.ts / %(step)s) * %(step)s,
       MIN(j.value::float8), MAX(j.value::float8), AVG(j.value::float8), COUNT(*)
FROM {source} AS r CROSS JOIN LATERAL jsonb_each(r.data) AS j
WHERE r.ts < %(cutoff)s AND jsonb_typeof(j.value) = 'number'
GROUP BY 1, 2, 3
ON CONFLICT (farm_id, name, ts) DO UPDATE SET
    min = LEAST(rollups.min, excluded.min),
    max = GREATEST(rollups.max, excluded.max),
    avg = (rollups.avg * rollups.count + excluded.avg * excluded.count) / (rollups.count + excluded.count),
    count = rollups.count + excluded.count
"""
# a farm's runs of consecutive seq in one partition (gaps and islands: seq minus its rank is constant in a run)
RUNS = """
SELECT MIN(seq), MAX(seq) FROM (
    SELECT seq, seq - row_number() OVER (ORDER BY seq) AS island
    FROM (SELECT DISTINCT seq FROM {partition} WHERE farm_id = %s) AS stored) AS numbered
GROUP BY island
"""
MARKS = """
INSERT INTO committed (farm_id, seq) SELECT * FROM unnest(%s::text[], %s::bigint[])
ON CONFLICT (farm_id) DO UPDATE SET seq = GREATEST(committed.seq, excluded.seq)
RETURNING farm_id, seq
"""
# the stored seq numbers above each farm's mark, a chunk per farm, for every farm of a batch in one round trip
# (a farm's walk that uses its whole chunk goes on alone, with ``advance``)
ABOVE_MARKS = """
SELECT f.farm_id, r.seq FROM unnest(%s::text[], %s::bigint[]) AS f(farm_id, mark)
CROSS JOIN LATERAL (SELECT DISTINCT seq FROM readings WHERE farm_id = f.farm_id AND seq > f.mark
                    ORDER BY seq LIMIT {limit}) AS r
ORDER BY f.farm_id, r.seq
"""
DAY_RUNS_KEEP_S = 60.0
Runs = list[tuple[int, int]]  # (first, last) of each run of consecutive seq numbers


def partition_name(table: str, index: int) -> str:
    start = datetime.fromtimestamp(index * PERIODS[table], UTC)
    return f"{table}_{start:%Y%m%d}"


def partition_index(table: str, name: str) -> int:
    start = datetime.strptime(name.removeprefix(f"{table}_"), "%Y%m%d").replace(tzinfo=UTC)
    return round(start.timestamp() / PERIODS[table])


class PostgresHistory(HistoryStore):
    def __init__(self, db: PostgresDatabase, raw_days: float, runs_keep_s: float = DAY_RUNS_KEEP_S) -> None:
        self.db = db
        self.raw_days = raw_days
        self.runs_keep_s = runs_keep_s
        # (farm, partition) -> (its oid, this node's writes there, when counted, the runs): replaced whole
        self._runs: dict[tuple[str, str], tuple[int, int, float, Runs]] = {}
        self._writes: dict[tuple[str, str], int] = {}  # (farm, partition) -> this node's writes there

    async def insert(self, pending: Sequence[Pending], now: datetime,
                     held_from: Mapping[str, int] | None = None) -> Written:
        return await self.db.write(lambda connection: self._insert(connection, pending, now.timestamp(),
                                                                   held_from or {}))

    def marks(self) -> dict[str, int]:
        rows = self.db.reader().execute("SELECT farm_id, seq FROM committed").fetchall()
        return {farm_id: int(seq) for farm_id, seq in rows}

    async def gaps(self, farm_id: str) -> dict[str, Any]:
        return await self.db.read(self._gaps, farm_id)

    async def fold(self, step: float, cutoff: float, expiry: float) -> tuple[int, int]:
        return await self.db.write(lambda connection: self._fold(connection, step, cutoff, expiry))

    def count(self) -> int:
        """The planner's estimate: an exact count of a fleet's month of readings would scan them all."""
        row = self.db.reader().execute(
            "SELECT COALESCE(SUM(GREATEST(c.reltuples, 0)), 0) FROM pg_inherits AS i "
            "JOIN pg_class AS c ON c.oid = i.inhrelid WHERE i.inhparent = 'readings'::regclass").fetchone()
        return int(row[0])

    def points(self, farm_id: str, name: str, start: float, end: float) -> tuple[list[Any], list[Any]]:
        db = self.db.reader()
        raw = db.execute(
            "SELECT ts, data -> %(name)s FROM readings WHERE farm_id = %(farm)s AND ts BETWEEN %(start)s AND %(end)s "
            "AND data ? %(name)s ORDER BY ts, seq",
            {"name": name, "farm": farm_id, "start": start, "end": end}).fetchall()
        rolled = db.execute(
            "SELECT ts, min, max, avg, count FROM rollups WHERE farm_id = %s AND name = %s AND ts BETWEEN %s AND %s "
            "ORDER BY ts", (farm_id, name, start, end)).fetchall()
        return raw, rolled

    def seqs(self, farm_id: str) -> list[int]:
        rows = self.db.reader().execute("SELECT DISTINCT seq FROM readings WHERE farm_id = %s ORDER BY seq",
                                        (farm_id,))
        return [seq for (seq,) in rows]

    def _gaps(self, farm_id: str) -> dict[str, Any]:
        db = self.db.reader()
        # by oid: a day dropped and made again (a node whose clock is behind) is another table
        partitions = dict(db.execute("SELECT c.relname, c.oid FROM pg_inherits AS i JOIN pg_class AS c "
                                     "ON c.oid = i.inhrelid WHERE i.inhparent = 'readings'::regclass").fetchall())
        days = sorted(name for name in partitions if name != "readings_default")
        always = {days[0], "readings_default"} if days else {"readings_default"}
        runs: Runs = []
        for partition, oid in partitions.items():
            runs += self._partition_runs(db, farm_id, partition, int(oid), recount=partition in always)
        return merged(runs).report()

    def _partition_runs(self, db: Any, farm_id: str, partition: str, oid: int, recount: bool) -> Runs:
        key = (farm_id, partition)
        writes = self._writes.get(key, 0)
        kept = self._runs.get(key)
        if (not recount and kept is not None and kept[:2] == (oid, writes)
                and time.monotonic() - kept[2] < self.runs_keep_s):
            return kept[3]
        counted_at = time.monotonic()
        runs = [(first, last) for first, last in db.execute(RUNS.format(partition=partition), (farm_id,))]
        # kept only if no write of this node went there meanwhile (it may be missing from what was counted)
        self._runs[key] = (oid, writes, counted_at, runs)
        return runs

    # ---- on the writer thread ----------------------------------------------------------------------

    def _insert(self, connection: Any, pending: Sequence[Pending], now: float,
                held_from: Mapping[str, int]) -> Written:
        first_day, last_day = math.floor(now / DAY - self.raw_days), math.floor(now / DAY) + 1
        days = {math.floor(ts / DAY) for _, _, ts, _ in pending}
        for day in sorted(days):
            if first_day <= day <= last_day:
                self._make_partition(connection, "readings", day)
        farm_ids = sorted({farm for farm, _, _, _ in pending} | set(held_from))
        inserted = 0
        marks: dict[str, int] = {}
        with connection.transaction():
            stored = dict(connection.execute("SELECT farm_id, seq FROM committed WHERE farm_id = ANY(%s)",
                                             (farm_ids,)).fetchall())
            repeated = {farm for farm, seq, _, _ in pending if seq <= stored.get(farm, 0)}
            if pending:
                farms, seqs, times, values = zip(*pending, strict=True)
                inserted = connection.execute(INSERT, (list(farms), list(seqs), list(times), list(values))).rowcount
            starts = {farm_id: held_mark(int(stored.get(farm_id, 0)), held_from, farm_id) for farm_id in farm_ids}
            moved = self._advance_all(connection, starts)
            raised = {farm_id: mark for farm_id, mark in moved.items() if mark != int(stored.get(farm_id, 0))}
            marks = {farm_id: int(stored.get(farm_id, 0)) for farm_id in farm_ids}
            if raised:
                rows = connection.execute(MARKS, (list(raised), list(raised.values()))).fetchall()
                marks.update((farm_id, int(seq)) for farm_id, seq in rows)
        for farm_id, day in {(farm, math.floor(ts / DAY)) for farm, _, ts, _ in pending}:
            key = (farm_id, partition_name("readings", day))  # a reading outside them: the default, always counted
            self._writes[key] = self._writes.get(key, 0) + 1
        return Written(int(inserted), marks, repeated)

    @staticmethod
    def _advance_all(connection: Any, starts: Mapping[str, int]) -> dict[str, int]:
        """Each farm's mark moved up over its stored readings that follow without a gap (see ``advance``): one
        query for the whole batch instead of one per farm, which held a batch of 10,000 farms to 2,000/s."""
        above: dict[str, list[int]] = {farm_id: [] for farm_id in starts}
        query = ABOVE_MARKS.format(limit=MARK_WALK)
        for farm_id, seq in connection.execute(query, (list(starts), list(starts.values()))).fetchall():
            above[farm_id].append(int(seq))
        moved: dict[str, int] = {}
        for farm_id, start in starts.items():
            mark = start
            for seq in above[farm_id]:
                if seq != mark + 1:
                    break
                mark = seq
            else:
                if len(above[farm_id]) == MARK_WALK:  # the chunk ran out without a gap: the walk goes on
                    mark = advance(connection, "%s", farm_id, mark)
            moved[farm_id] = mark
        return moved

    def _make_partition(self, connection: Any, table: str, index: int) -> None:
        """The partition of ``table`` for period ``index``, with the rows the default partition held for it."""
        name = partition_name(table, index)
        # asked every time (a catalog lookup): another node's retention may have dropped it, or a transaction
        # that made it may have been rolled back
        if connection.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0] is not None:
            return
        start, end = index * PERIODS[table], (index + 1) * PERIODS[table]
        with connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK,))
            if connection.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0] is None:
                # no insert may put a row of this period in the default partition while it is moved out
                connection.execute(f"LOCK TABLE {table}_default IN EXCLUSIVE MODE")
                connection.execute(f"CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
                connection.execute(f"WITH moved AS (DELETE FROM {table}_default WHERE ts >= %s AND ts < %s "
                                   f"RETURNING *) INSERT INTO {name} SELECT * FROM moved", (start, end))
                connection.execute(f"ALTER TABLE {table} ATTACH PARTITION {name} FOR VALUES FROM ({start!r}) "
                                   f"TO ({end!r})")

    def _partitions(self, connection: Any, table: str) -> list[tuple[str, float, float]]:
        rows = connection.execute(
            "SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass AND c.relname <> %s", (table, f"{table}_default")).fetchall()
        found = [(name, partition_index(table, name)) for (name,) in rows]
        return sorted((name, index * PERIODS[table], (index + 1) * PERIODS[table]) for name, index in found)

    def _fold(self, connection: Any, step: float, cutoff: float, expiry: float) -> tuple[int, int]:
        folded = expired = 0
        readings = self._partitions(connection, "readings")
        # the rollups' own partitions, for the weeks the folded readings fall in
        weeks = {math.floor(ts / PERIODS["rollups"]) for _, start, end in readings if start < cutoff
                 for ts in (start, min(end, cutoff) - 1)}
        for week in sorted(weeks):
            if week * PERIODS["rollups"] >= expiry - PERIODS["rollups"]:
                self._make_partition(connection, "rollups", week)
        with connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK,))
            for name, start, end in readings:
                if start >= cutoff:
                    continue
                connection.execute(ROLLUP.format(source=name), {"step": step, "cutoff": cutoff})
                if end <= cutoff:
                    folded += connection.execute(f"SELECT COUNT(*) FROM {name}").fetchone()[0]
                    connection.execute(f"DROP TABLE {name}")
                else:
                    folded += connection.execute(f"DELETE FROM {name} WHERE ts < %s", (cutoff,)).rowcount
            connection.execute(ROLLUP.format(source="readings_default"), {"step": step, "cutoff": cutoff})
            folded += connection.execute("DELETE FROM readings_default WHERE ts < %s", (cutoff,)).rowcount
            for name, _start, end in self._partitions(connection, "rollups"):
                if end <= expiry:
                    expired += connection.execute(f"SELECT COUNT(*) FROM {name}").fetchone()[0]
                    connection.execute(f"DROP TABLE {name}")
            expired += connection.execute("DELETE FROM rollups WHERE ts < %s", (expiry,)).rowcount
        return int(folded), int(expired)


def merged(runs: Runs) -> SeqRuns:
    """The farm's summary from its partitions' runs (a seq stored in two partitions, at two times, counts once)."""
    joined: Runs = []
    for first, last in sorted(runs):
        if joined and first <= joined[-1][1] + 1:
            joined[-1] = (joined[-1][0], max(joined[-1][1], last))
        else:
            joined.append((first, last))
    count = sum(last - first + 1 for first, last in joined)
    return SeqRuns(count, joined[0][0] if joined else None, joined[-1][1] if joined else None, len(joined))
