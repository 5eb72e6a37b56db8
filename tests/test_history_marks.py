"""The history's committed mark per farm: the highest seq below which every reading is stored, moved in the
commit that stores them, stepping over what the farm said it no longer holds, and kept across a restart; on
both backends, and on PostgreSQL with two nodes moving one farm's mark."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime

from contract.messages import decode_message
from contract.payloads import Reading, encode
from contract.topics import Topics
from discovery.history import HistoryRecorder
from discovery.postgres.storage import PostgresStorage
from discovery.storage import Storage

NOW = datetime(2026, 11, 24, 21, 0, tzinfo=UTC)
FARM = "farm-001"


async def store(history: HistoryRecorder, *seqs: int) -> None:
    for seq in seqs:
        reading = Reading(ts=NOW, seq=seq, values={"temp_inside": 20.0})
        await history.on_message(decode_message(Topics(), Topics().backlog(FARM), encode(reading)))
    await history.commit()


async def test_the_mark_moves_over_contiguous_readings_only_and_steps_over_what_the_farm_dropped(
    storage: Storage
) -> None:
    history = HistoryRecorder(storage.history(), Topics(), lambda: NOW)
    await history.start()
    try:
        await store(history, 1, 2, 3, 6, 7)
        assert history.take_announcements() == {FARM: 3}  # 4 and 5 may still come: 6 and 7 are not confirmed
        await store(history, 3)
        assert history.take_announcements() == {FARM: 3}  # a reading sent again: the farm may have missed its mark
        await store(history, 9)
        assert history.take_announcements() == {}  # the mark did not move, and 9 came for the first time
        history.hold_from(FARM, 6)  # the farm's heartbeat: it holds nothing below 6 (its bounds dropped 4 and 5)
        await history.commit()
        assert history.take_announcements() == {FARM: 7}
    finally:
        await history.stop()
    again = HistoryRecorder(storage.history(), Topics(), lambda: NOW)
    await again.start()
    try:
        assert again.marks == {FARM: 7}
        await store(again, 8)
        assert again.take_announcements() == {FARM: 9}
    finally:
        await again.stop()


async def test_a_write_cancelled_before_it_ran_leaves_the_writer_thread_working(storage: Storage) -> None:
    history = HistoryRecorder(storage.history(), Topics(), lambda: NOW)
    history.db.open()
    try:
        blocked = threading.Event()
        first = history.db.submit(lambda db: blocked.wait(5))  # holds the writer while the next one is cancelled
        assert history.db.submit(lambda db: None).cancel()
        blocked.set()
        first.result(5)
        assert await asyncio.wait_for(history.db.write(lambda db: 42), 5) == 42
    finally:
        history.db.close()


async def test_two_nodes_move_one_farms_mark_from_the_shared_store_and_never_lower_it(postgres_url: str) -> None:
    storage = PostgresStorage(postgres_url)
    storage.open()
    here = HistoryRecorder(storage.history(), Topics(), lambda: NOW)
    there = HistoryRecorder(storage.history(), Topics(), lambda: NOW)
    await here.start()
    await there.start()
    try:
        await store(here, 1, 2, 4)
        assert here.take_announcements() == {FARM: 2}
        await store(there, 3)  # the other node fills the gap: it walks from the stored mark, over 4
        assert there.take_announcements() == {FARM: 4}
        await store(here, 2)  # a reading sent again to the node that knew only 2: it learns 4 from the store
        assert here.take_announcements() == {FARM: 4}
        await store(there, 5)
        assert there.take_announcements() == {FARM: 5}
        assert await here.db.read(here.store.marks) == {FARM: 5}
    finally:
        await there.stop()
        await here.stop()
        storage.close()
