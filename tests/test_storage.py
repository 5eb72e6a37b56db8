"""The discovery node's storage on both backends: the registry, the audit and the tailnet store answer the same
on SQLite and PostgreSQL; on PostgreSQL the history's partitions are made per day and dropped by retention, the
schema is migrated once however many nodes start at once, the lease is held by one node at a time and passes
on when its holder goes, and a writer whose connection the server ended goes on with a new one."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from contract.messages import FarmMessage
from contract.payloads import Ack, DeviceInfo, Meta, ProfileSummary, Reading, SetCommand, Status
from contract.topics import FarmTopic, Topics
from discovery.audit import SCHEMA as AUDIT_SCHEMA
from discovery.audit import CommandAudit
from discovery.postgres.history import PostgresHistory, partition_name
from discovery.postgres.lease import AdvisoryLease
from discovery.postgres.migrate import SchemaError, migrate, migrations
from discovery.postgres.storage import PostgresStorage
from discovery.registry import SCHEMA as REGISTRY_SCHEMA
from discovery.registry import Registry
from discovery.storage import Storage
from discovery.tailscale.store import SCHEMA as TAILNET_SCHEMA
from discovery.tailscale.store import TailnetStore
from tests.helpers import wait_until

NOW = datetime(2026, 11, 24, 21, 0, tzinfo=UTC)
DAY = 86400.0


async def test_the_registry_answers_the_same_on_both_backends(storage: Storage) -> None:
    registry = Registry(storage.database("discovery.db", REGISTRY_SCHEMA))
    registry.db.open()
    try:
        registry.record_status("farm-b", Status(state="online", ts=NOW), NOW)
        meta = Meta(farm_id="farm-b", name="Птичник", owner_id="owner-a", agent_version="test", poll_interval_s=5,
                    device=DeviceInfo(model="KUB-1063", firmware="4.01"),
                    profile=ProfileSummary(name="KUB-1063", values=["t"]), ts=NOW)
        registry.record_meta("farm-b", meta, NOW)
        registry.record_state("farm-b", Reading(ts=NOW, seq=3, values={"t": 1.5}), NOW)
        registry.record_status("farm-a", Status(state="offline", ts=NOW), NOW)
        await registry.db.write(lambda db: None)  # after the writes queued before it
        farms = await registry.db.read(registry.farms)
        assert [f["farm_id"] for f in farms] == ["farm-a", "farm-b"]
        assert [f["farm_id"] for f in await registry.db.read(registry.farms, "owner-a")] == ["farm-b"]
        farm = await registry.db.read(registry.farm, "farm-b")
        assert farm is not None and farm["name"] == "Птичник" and farm["online"] is True
        assert farm["state"]["values"] == {"t": 1.5} and farm["alarms"] is None
        assert await registry.db.read(registry.presence) == {True: 1, False: 1}
        assert await registry.db.read(registry.count) == 2
        assert await registry.db.read(registry.farm, "farm-z") is None
        assert await registry.db.read(registry.healthy)
    finally:
        registry.db.close()


async def test_the_command_audit_answers_the_same_on_both_backends(storage: Storage) -> None:
    audit = CommandAudit(storage.database("commands.db", AUDIT_SCHEMA), Topics(), lambda: NOW)
    await audit.start()
    try:
        await audit.on_message(FarmMessage("farm-a", FarmTopic.SET, SetCommand(id="c1", value=22.5), name="temp"))
        await audit.on_message(FarmMessage("farm-a", FarmTopic.ACK, Ack(id="c1", name="temp", value=22.5, ok=True,
                                                                        ts=NOW + timedelta(seconds=1))))
        await audit.db.write(lambda db: None)
        commands = await audit.db.read(audit.commands, "farm-a", 10)
        assert [(c["id"], c["name"], c["value"], c["ok"]) for c in commands] == [("c1", "temp", 22.5, True)]
    finally:
        await audit.stop()


async def test_the_tailnet_store_answers_the_same_on_both_backends(storage: Storage) -> None:
    store = TailnetStore(storage.database("tailnet.db", TAILNET_SCHEMA))
    store.db.open()
    try:
        device = {"id": "d1", "name": "farm-a.tail", "hostname": "farm-a", "farm_id": "farm-a", "online": True}
        await store.replace([device, {**device, "id": "d2", "hostname": "x", "farm_id": None, "online": None}],
                            NOW, "api", "example.org")
        await store.replace([device], NOW, "api", "example.org")  # d2 gone from the tailnet: gone here too
        assert await store.db.read(store.devices) == [device]
        assert (await store.db.read(store.last_sync))["tailnet"] == "example.org"
    finally:
        store.db.close()


@pytest.fixture
def pg(postgres_url: str) -> Any:
    storage = PostgresStorage(postgres_url)
    storage.open()
    yield storage
    storage.close()


def partitions(url: str, table: str) -> list[str]:
    with psycopg.connect(url) as connection:
        rows = connection.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass ORDER BY 1", (table,)).fetchall()
    return [name for (name,) in rows]


async def test_postgresql_keeps_a_partition_a_day_and_retention_drops_whole_ones(pg: PostgresStorage,
                                                                               postgres_url: str) -> None:
    history = pg.history(raw_days=30)
    history.open()
    try:
        # NOW is 21:00: days 3 and 2 back, 1 back at 15:00 and at 21:00, today
        times = [NOW - timedelta(days=3), NOW - timedelta(days=2), NOW - timedelta(days=1, hours=6),
                 NOW - timedelta(days=1), NOW]
        rows = [("farm-a", seq, moment.timestamp(), '{"t": 1.5}') for seq, moment in enumerate(times)]
        rows.append(("farm-a", 99, (NOW - timedelta(days=400)).timestamp(), '{"t": 9}'))  # out of the window
        assert await history.insert(rows, NOW) == 6
        assert await history.insert(rows, NOW) == 0  # each (farm, seq) once
        index = sorted({int(moment.timestamp() // DAY) for moment in times})
        assert partitions(postgres_url, "readings") == sorted(
            [*(partition_name("readings", i) for i in index), "readings_default"])
        cutoff = (NOW - timedelta(days=1, hours=3)).timestamp()  # 18:00 the day before
        folded, _ = await history.fold(300, cutoff, (NOW - timedelta(days=365)).timestamp())
        assert folded == 4  # days 3 and 2 back whole (dropped), 15:00 the day before, the out-of-window one
        assert partitions(postgres_url, "readings") == sorted(
            [*(partition_name("readings", i) for i in index[2:]), "readings_default"])
        assert await history.db.read(history.seqs, "farm-a") == [3, 4]
        raw, rolled = await history.db.read(history.points, "farm-a", "t", 0, NOW.timestamp() + 1)
        # the 400-day-old reading's rollup is past keep_days (365): gone as well
        assert [value for _, value in raw] == [1.5, 1.5] and sum(r[4] for r in rolled) == 3
    finally:
        history.close()


async def test_postgresql_moves_a_days_readings_out_of_the_default_partition_when_it_gets_its_own(
        pg: PostgresStorage, postgres_url: str) -> None:
    history = pg.history(raw_days=1)
    history.open()
    try:
        early = NOW - timedelta(days=3)  # outside a 1-day window at NOW: the default partition
        await history.insert([("farm-a", 1, early.timestamp(), '{"t": 1}')], NOW)
        # later, with the clock back (a node whose clock was wrong), that day gets its partition
        await history.insert([("farm-a", 2, early.timestamp() + 60, '{"t": 2}')], early)
        assert partition_name("readings", int(early.timestamp() // DAY)) in partitions(postgres_url, "readings")
        assert await history.db.read(history.seqs, "farm-a") == [1, 2]
        with psycopg.connect(postgres_url) as connection:
            assert connection.execute("SELECT COUNT(*) FROM readings_default").fetchone() == (0,)
    finally:
        history.close()


def test_two_nodes_starting_at_once_migrate_the_schema_once(postgres_url: str) -> None:
    results: list[list[int]] = []

    def start() -> None:
        with psycopg.connect(postgres_url, autocommit=True) as connection:
            results.append(migrate(connection))

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [[], [], [], [version for version, _ in migrations()]]


def test_a_schema_newer_than_this_version_is_refused_with_a_reason(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        migrate(connection)
        connection.execute("INSERT INTO kubmesh_schema (version, name) VALUES (99, 'from a newer kubmesh')")
        with pytest.raises(SchemaError, match="version 99, newer than this kubmesh"):
            migrate(connection)


async def test_the_lease_is_held_by_one_node_and_taken_over_when_it_goes(pg: PostgresStorage,
                                                                         postgres_url: str) -> None:
    first, second = AdvisoryLease(postgres_url, 0.1), AdvisoryLease(postgres_url, 0.1)
    stop_first, stop_second = asyncio.Event(), asyncio.Event()
    tasks = [asyncio.create_task(first.run(stop_first))]
    await asyncio.to_thread(wait_until, lambda: first.held, 10, what="the first node takes the lease")
    tasks.append(asyncio.create_task(second.run(stop_second)))
    await asyncio.sleep(0.5)  # five of the second node's attempts
    assert first.held and not second.held
    with psycopg.connect(postgres_url, autocommit=True) as admin:  # the first node's session ends, as at a crash
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = "
                      "'kubmesh-lease' AND pid = (SELECT pid FROM pg_locks WHERE locktype = 'advisory' "
                      "AND granted LIMIT 1)")
    await asyncio.to_thread(wait_until, lambda: second.held and not first.held, 10, what="the second takes over")
    stop_first.set()
    stop_second.set()
    await asyncio.gather(*tasks)
    assert not first.held and not second.held


async def test_a_writer_whose_connection_the_server_ended_goes_on_with_a_new_one(pg: PostgresStorage,
                                                                                postgres_url: str) -> None:
    registry = Registry(pg.database("discovery.db", REGISTRY_SCHEMA))
    registry.db.open()
    try:
        registry.record_status("farm-a", Status(state="online", ts=NOW), NOW)
        writer_pid = await registry.db.write(lambda db: db.execute("SELECT pg_backend_pid()").fetchone()[0])
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (writer_pid,))
        with pytest.raises(psycopg.OperationalError):
            await registry.db.write(lambda db: db.execute("SELECT 1"))
        assert registry.db.write_errors == 1
        registry.record_status("farm-b", Status(state="online", ts=NOW), NOW)
        await registry.db.write(lambda db: None)
        assert await registry.db.read(registry.count) == 2
    finally:
        registry.db.close()


async def test_a_reading_another_node_stored_shows_in_this_nodes_gap_summary_within_its_bound(
        pg: PostgresStorage) -> None:
    loop = asyncio.get_running_loop()
    here, there = PostgresHistory(pg.database("history", ""), 30, runs_keep_s=0.5), pg.history(30)
    here.open()
    there.open()
    try:
        times = [(NOW - timedelta(days=days)).timestamp() for days in (3, 2, 1)]
        await here.insert([("farm-a", seq, ts, "{}") for seq, ts in zip((1, 2, 5), times, strict=True)], NOW)
        assert (await here.gaps("farm-a"))["gaps"] == 1  # 3 and 4 missing
        # the other node stores 3 and 4 in the day two back (its partition not the oldest): this node never
        # received them, so only the bound on a kept day's runs brings them in
        await there.insert([("farm-a", 3, times[1] + 5, "{}"), ("farm-a", 4, times[1] + 10, "{}")], NOW)
        report = await asyncio.to_thread(wait_until, lambda: asyncio.run_coroutine_threadsafe(
            here.gaps("farm-a"), loop).result()["gaps"] == 0 and True, 10, 0.1, "the other node's readings")
        assert report
        assert await here.gaps("farm-a") == {"readings": 5, "first_seq": 1, "last_seq": 5, "gaps": 0, "missing": 0}
        await here.insert([("farm-a", 7, times[2] + 5, "{}")], NOW)  # this node's own write: at once
        assert (await here.gaps("farm-a"))["missing"] == 1
    finally:
        here.close()
        there.close()


async def test_a_failing_write_queued_with_others_fails_alone(storage: Storage) -> None:
    registry = Registry(storage.database("discovery.db", REGISTRY_SCHEMA))
    registry.db.open()
    try:
        release = threading.Event()
        registry.db.submit(lambda db: release.wait(10))  # holds the writer while the next ones queue up
        registry.record_status("farm-a", Status(state="online", ts=NOW), NOW)
        bad = registry.db.submit(lambda db: db.execute("INSERT INTO no_such_table VALUES (1)"))
        registry.record_status("farm-b", Status(state="online", ts=NOW), NOW)
        release.set()  # PostgreSQL writes the three in one transaction, the bad one in a savepoint of its own
        with pytest.raises(Exception, match="no_such_table"):
            await asyncio.wrap_future(bad)
        await registry.db.write(lambda db: None)
        assert [f["farm_id"] for f in await registry.db.read(registry.farms)] == ["farm-a", "farm-b"]
        assert registry.db.write_errors == 1
    finally:
        registry.db.close()
