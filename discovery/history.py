"""Extension: the history of every farm's readings, from ``state`` and ``backlog``, in the node's
:class:`~discovery.storage.HistoryStore` (SQLite's ``history.db``, or PostgreSQL's partitioned tables).

A reading is stored once, keyed by farm and ``seq``: a reading replayed on ``backlog`` after it
already came live (or the retained ``state`` sent again on every subscribe) changes nothing.
Readings wait in memory until the bus commits (:meth:`HistoryRecorder.commit`, awaited before the
bus acknowledges them), then are written in one transaction on the database's writer thread. Raw
readings are kept for ``raw_days``, then folded into per-``rollup_step`` min/max/avg rows kept for
``keep_days``, on a timer of its own (the fold runs on the writer thread too), by the one node that holds
the storage's lease. Gaps are counted from ``seq``. The queries block and run on the database's reader
threads.

Each farm has a committed mark (table ``committed``, in either store): the highest ``seq`` up to which every
reading is stored, moved forward in the transaction that stores them. A farm's heartbeat says from which
``seq`` on it still holds readings (``held_from``); what lies below that and is missing was dropped by the
farm's own bounds, so the mark steps over it instead of waiting for it for ever. Each node computes the mark
from the shared store and only ever raises it (two nodes on one PostgreSQL both store every reading, so
either may move it); :mod:`discovery.confirmation` publishes the marks to the farms.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from contract.messages import FarmMessage, Message
from contract.payloads import Clock, Reading
from contract.topics import FarmTopic, Topics
from discovery.extension import Extension, Node
from discovery.storage import Database, HistoryStore, Lease, Pending, SoleNode

log = logging.getLogger("kubmesh.discovery.history")

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

    def __init__(self, store: HistoryStore, topics: Topics, clock: Clock, retention: Retention | None = None,
                 retention_every_s: float = RETENTION_EVERY_S, lease: Lease | None = None) -> None:
        self.store = store
        self.db = store.db
        self.topics = topics
        self.clock = clock
        self.retention = retention or Retention()
        self.retention_every_s = retention_every_s
        self.lease = lease or SoleNode()
        self._stored = 0
        self._pending: list[Pending] = []
        self._retention_task: asyncio.Task[None] | None = None
        self._held_from: dict[str, int] = {}  # per farm, from heartbeats: applied to the marks at the next commit
        self.marks: dict[str, int] = {}  # per farm, as of the last commit (or as stored, at start)
        self._announce: set[str] = set()  # farms whose mark to publish: it moved, or a reading below it came again

    @classmethod
    def build(cls, node: Node) -> HistoryRecorder:
        settings = node.settings
        return cls(node.storage.history(settings.history_raw_days), node.topics, node.clock, Retention(
            settings.history_raw_days, settings.history_rollup_seconds, settings.history_keep_days),
            lease=node.lease)

    # ---- the extension -----------------------------------------------------------------------------

    def filters(self) -> list[str]:
        return [self.topics.all_farms(FarmTopic.STATE), self.topics.all_farms(FarmTopic.BACKLOG)]

    async def start(self) -> None:
        self.store.open()
        self._stored = await self.db.read(self.store.count)  # then kept up to date by the writes
        self.marks = await self.db.read(self.store.marks)
        self._retention_task = asyncio.create_task(self._retention_timer())

    async def stop(self) -> None:
        if self._retention_task is not None:
            self._retention_task.cancel()
            await asyncio.gather(self._retention_task, return_exceptions=True)
        await self.commit()
        self.store.close()

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

    def hold_from(self, farm_id: str, seq: int) -> None:
        """The farm holds no reading below ``seq`` any more: its mark may step over what is missing there."""
        self._held_from[farm_id] = max(seq, self._held_from.get(farm_id, 0))

    async def commit(self) -> None:
        """Write the pending readings in one transaction; a reading already stored is left as it is."""
        pending, self._pending = self._pending, []
        held_from, self._held_from = self._held_from, {}
        if pending or held_from:
            written = await self.store.insert(pending, self.clock(), held_from)
            self._stored += written.inserted
            for farm_id, seq in written.marks.items():
                if seq > self.marks.get(farm_id, 0):
                    self.marks[farm_id] = seq
                    self._announce.add(farm_id)
            self._announce |= written.repeated

    def take_announcements(self) -> dict[str, int]:
        """The marks to publish since the last call: those that moved, or that a farm seems not to have had."""
        farms, self._announce = self._announce, set()
        return {farm: self.marks[farm] for farm in sorted(farms) if farm in self.marks}

    # ---- retention ---------------------------------------------------------------------------------

    async def _retention_timer(self) -> None:
        while True:
            try:
                if self.lease.held:  # one node folds and drops; the others would only repeat it
                    await self.apply_retention()
            except Exception:  # logged; retention tries again at the next tick and the history goes on
                log.exception("history retention failed")
            await asyncio.sleep(self.retention_every_s)

    async def apply_retention(self) -> None:
        """Fold raw readings older than ``raw_days`` into rollups; drop rollups older than ``keep_days``."""
        now = self.clock().timestamp()
        step = self.retention.rollup_step
        cutoff = (now - self.retention.raw_days * 86400) // step * step  # whole buckets only
        folded, expired = await self.store.fold(step, cutoff, now - self.retention.keep_days * 86400)
        self._stored -= folded
        if folded or expired:
            log.info("history retention: %d raw reading(s) downsampled, %d old rollup(s) removed", folded, expired)

    # ---- reading (blocking: through self.db.read) ---------------------------------------------------

    def points(self, farm_id: str, name: str, start: datetime, end: datetime,
               step: float | None = None) -> list[dict[str, Any]]:
        """The value's readings between ``start`` and ``end``; with ``step``, min/max/avg per bucket."""
        raw, rolled = self.store.points(farm_id, name, start.timestamp(), end.timestamp())
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
        """How many readings are stored, and how many ``seq`` numbers are missing between them (and where)."""
        return await self.store.gaps(farm_id)


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
