"""The history's committed mark per farm: the highest seq below which every reading is stored, moved in the
commit that stores them, stepping over what the farm said it no longer holds, and kept across a restart."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from pathlib import Path

from contract.messages import decode_message
from contract.payloads import Reading, encode
from contract.topics import Topics
from discovery.history import HistoryRecorder

NOW = datetime(2026, 11, 24, 21, 0, tzinfo=UTC)
FARM = "farm-001"


async def store(history: HistoryRecorder, *seqs: int) -> None:
    for seq in seqs:
        reading = Reading(ts=NOW, seq=seq, values={"temp_inside": 20.0})
        await history.on_message(decode_message(Topics(), Topics().backlog(FARM), encode(reading)))
    await history.commit()


async def test_the_mark_moves_over_contiguous_readings_only_and_steps_over_what_the_farm_dropped(
    tmp_path: Path
) -> None:
    history = HistoryRecorder(tmp_path / "history.db", Topics(), lambda: NOW)
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
    again = HistoryRecorder(tmp_path / "history.db", Topics(), lambda: NOW)
    await again.start()
    try:
        assert again.marks == {FARM: 7}
        await store(again, 8)
        assert again.take_announcements() == {FARM: 9}
    finally:
        await again.stop()


async def test_a_write_cancelled_before_it_ran_leaves_the_writer_thread_working(tmp_path: Path) -> None:
    history = HistoryRecorder(tmp_path / "history.db", Topics(), lambda: NOW)
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
