"""The history's storage on this machine, PostgreSQL against SQLite in the same run: readings ingested per
second by the discovery node's history at 2,000 and 10,000 simulated farms polling every 5 s, and the farm
page's history queries on one farm's 30 days of readings every 5 s; and the registry's upserts per second.

Ingest goes through :class:`discovery.history.HistoryRecorder` as the bus drives it: each reading handed to
``on_message``, then ``commit`` once per batch, a batch being what a fleet sends in the bus's commit interval
(0.25 s: farms / 5 × 0.25 readings). Each farm publishes ``--rounds`` polls; the figure is readings stored
per second, against the fleet's need (farms / 5 per second). PostgreSQL runs from Debian's package in a
temporary directory with its default durability (fsync and synchronous commit on); SQLite as the node runs
it (WAL, synchronous=NORMAL).

The farm page: ``GET /api/farms/{farm}`` counts the farm's gaps over its whole history (SQLite: counted once,
then kept in memory by the writes, so the first request and the next differ; PostgreSQL: counted by the
server for every request, since no node sees every insert), and its chart asks 24 h in 15-minute buckets and
7 days in 2-hour buckets.

    python benchmarks/storage_ingest.py [--fleets 2000 10000] [--rounds 3] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from contract.messages import FarmMessage
from contract.payloads import Reading
from contract.topics import FarmTopic, Topics
from discovery.history import HistoryRecorder
from discovery.postgres.storage import PostgresStorage
from discovery.registry import SCHEMA as REGISTRY_SCHEMA
from discovery.registry import Registry
from discovery.sqlite import SqliteStorage
from discovery.storage import Storage
from tests.postgres import postgres_server

POLL_S = 5
COMMIT_INTERVAL_S = 0.25
HISTORY_FARM = "farm-history"
HISTORY_DAYS = 30
SEED_BATCH = 20_000
VALUES = {"temp_inside": 21.4, "humidity": 63.0, "co2": 812, "temp_outside": 7.9, "fan_speed": 40}


def messages(farms: int, rounds: int, start: datetime) -> list[list[FarmMessage[Any]]]:
    """Every farm's ``rounds`` polls, cut into the batches the bus commits."""
    batch = max(1, int(farms / POLL_S * COMMIT_INTERVAL_S))
    flat = [FarmMessage(f"farm-{farm:05d}", FarmTopic.STATE,
                        Reading(ts=start + timedelta(seconds=POLL_S * poll), seq=poll + 1, values=VALUES))
            for poll in range(rounds) for farm in range(farms)]
    return [flat[i:i + batch] for i in range(0, len(flat), batch)]


async def ingest(storage: Storage, farms: int, rounds: int, now: datetime) -> float:
    recorder = HistoryRecorder(storage.history(), Topics(), lambda: now)
    await recorder.start()
    batches = messages(farms, rounds, now - timedelta(minutes=10))
    started = time.perf_counter()
    for batch in batches:
        for message in batch:
            await recorder.on_message(message)
        await recorder.commit()
    elapsed = time.perf_counter() - started
    await recorder.stop()
    return farms * rounds / elapsed


async def registry_updates(storage: Storage, farms: int, now: datetime) -> float:
    """The registry's upserts per second (each reading and heartbeat updates its farm's row, one write each)."""
    registry = Registry(storage.database("discovery.db", REGISTRY_SCHEMA))
    registry.db.open()
    reading = Reading(ts=now, seq=1, values=VALUES)
    started = time.perf_counter()
    for farm in range(farms):
        registry.record_state(f"farm-{farm:05d}", reading, now)
    await registry.db.write(lambda db: None)  # after every write queued before it
    elapsed = time.perf_counter() - started
    registry.db.close()
    return farms / elapsed


async def seed(storage: Storage, now: datetime) -> tuple[int, float]:
    """30 days of one farm's readings every 5 s, through the store's own batched insert; the count, and the
    bytes on disk per reading (table and indexes)."""
    store = storage.history()
    store.open()
    count = HISTORY_DAYS * 86400 // POLL_S
    first = now.timestamp() - count * POLL_S
    values = json.dumps(VALUES)
    for low in range(1, count + 1, SEED_BATCH):
        high = min(low + SEED_BATCH, count + 1)
        rows = [(HISTORY_FARM, seq, first + seq * POLL_S, values) for seq in range(low, high)]
        await store.insert(rows, now)
    if isinstance(storage, PostgresStorage):
        await store.db.write(lambda db: db.execute("ANALYZE readings"))
        size = await store.db.read(lambda: store.db.reader().execute(
            "SELECT SUM(pg_total_relation_size(inhrelid)) FROM pg_inherits "
            "WHERE inhparent = 'readings'::regclass").fetchone()[0])
    else:
        await store.db.write(lambda db: db.execute("PRAGMA wal_checkpoint(TRUNCATE)"))
        size = (store.db.path.parent / "history.db").stat().st_size  # type: ignore[attr-defined]
    store.close()
    return count, float(size) / count


async def farm_page(storage: Storage, now: datetime, repeat: int) -> dict[str, float]:
    recorder = HistoryRecorder(storage.history(), Topics(), lambda: now)
    await recorder.start()
    figures: dict[str, float] = {}
    started = time.perf_counter()
    await recorder.gaps(HISTORY_FARM)
    figures["farm detail (gaps), first request"] = (time.perf_counter() - started) * 1000

    async def median_of(call: Callable[[], Awaitable[Any]]) -> float:
        samples = []
        for _ in range(repeat):
            started = time.perf_counter()
            await call()
            samples.append((time.perf_counter() - started) * 1000)
        return statistics.median(samples)

    figures["farm detail (gaps), next requests"] = await median_of(lambda: recorder.gaps(HISTORY_FARM))
    for label, span, step in (("chart 24 h / 15 min", timedelta(hours=24), 900),
                              ("chart 7 d / 2 h", timedelta(days=7), 7200)):
        def chart(span: timedelta = span, step: int = step) -> Awaitable[list[dict[str, Any]]]:
            return recorder.db.read(recorder.points, HISTORY_FARM, "temp_inside", now - span, now, float(step))

        figures[label] = await median_of(chart)
    await recorder.stop()
    return figures


async def run_backend(name: str, storage: Storage, fleets: list[int], rounds: int, repeat: int,
                      now: datetime) -> dict[str, Any]:
    storage.open()
    try:
        seeded, per_reading = await seed(storage, now)
        result: dict[str, Any] = {"seeded": seeded, "bytes": per_reading, "ingest": {}}
        for farms in fleets:
            result["ingest"][farms] = await ingest(storage, farms, rounds, now)
            print(f"  {name}: {farms} farms: {result['ingest'][farms]:,.0f} readings/s", flush=True)
        result["registry"] = await registry_updates(storage, max(fleets), now)
        print(f"  {name}: registry: {result['registry']:,.0f} upserts/s", flush=True)
        result["page"] = await farm_page(storage, now, repeat)
        return result
    finally:
        storage.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fleets", type=int, nargs="+", default=[2000, 10000])
    parser.add_argument("--rounds", type=int, default=3, help="polls per farm ingested")
    parser.add_argument("--repeat", type=int, default=5, help="requests per farm-page figure (median)")
    args = parser.parse_args()
    now = datetime.now(UTC).replace(microsecond=0)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="kubmesh-bench-") as directory:
        print("sqlite ...", flush=True)
        results["sqlite"] = await run_backend("sqlite", SqliteStorage(Path(directory) / "discovery.db"),
                                              args.fleets, args.rounds, args.repeat, now)
    with postgres_server(fsync=True) as server, server.database() as url:
        print("postgresql ...", flush=True)
        results["postgresql"] = await run_backend("postgresql", PostgresStorage(url), args.fleets, args.rounds,
                                                  args.repeat, now)
    sqlite, pg = results["sqlite"], results["postgresql"]
    print(f"\ningest: readings stored per second ({args.rounds} polls per farm, batches of one commit interval)")
    print(f"{'farms':>8} {'needed/s':>9} {'sqlite/s':>10} {'postgresql/s':>13} {'pg/sqlite':>10} "
          f"{'headroom sqlite':>16} {'headroom pg':>12}")
    for farms in args.fleets:
        need = farms / POLL_S
        s, p = sqlite["ingest"][farms], pg["ingest"][farms]
        print(f"{farms:>8} {need:>9,.0f} {s:>10,.0f} {p:>13,.0f} {p / s:>10.2f} {s / need:>15.1f}x {p / need:>11.1f}x")
    need = max(args.fleets) * 0.16  # a farm's state (reported by exception) and heartbeat messages per second
    print(f"\nregistry upserts per second, {max(args.fleets)} farms once each: sqlite {sqlite['registry']:,.0f}, "
          f"postgresql {pg['registry']:,.0f} ({pg['registry'] / sqlite['registry']:.2f}); {need:,.0f}/s needed "
          f"at 0.16 messages a farm a second")
    print(f"\nbytes on disk per reading (5 values, with the indexes): sqlite {sqlite['bytes']:.0f}, "
          f"postgresql {pg['bytes']:.0f} ({pg['bytes'] / sqlite['bytes']:.2f})")
    print(f"\nfarm page on {sqlite['seeded']:,} readings (30 days every 5 s), median of {args.repeat}, ms")
    print(f"{'query':<38} {'sqlite':>9} {'postgresql':>11} {'pg/sqlite':>10}")
    for label, s_ms in sqlite["page"].items():
        p_ms = pg["page"][label]
        print(f"{label:<38} {s_ms:>9.1f} {p_ms:>11.1f} {p_ms / s_ms:>10.1f}")


if __name__ == "__main__":
    asyncio.run(main())
