"""The agent's on-disk queue: numbering, bounds by count and age, counting what the bounds drop."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from contract.payloads import Reading, decode
from farm_agent.queue import ReadingQueue
from farm_agent.store import AgentStore

T0 = datetime(2026, 11, 24, 21, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def reading_at(clock: Clock):  # type: ignore[no-untyped-def]
    return lambda seq: Reading(ts=clock(), seq=seq, values={"temp_inside": 20.5})


def test_readings_are_numbered_queued_and_survive_a_reopen(tmp_path: Path) -> None:
    clock = Clock()
    store = AgentStore(tmp_path / "agent.db")
    queue = ReadingQueue(store, max_readings=100, max_age_s=3600, clock=clock)
    numbered = [queue.add(reading_at(clock)).reading.seq for _ in range(5)]
    assert numbered == [1, 2, 3, 4, 5] and len(queue) == 5
    queue.remove([1, 2])
    store.close()  # as after a crash: all that was committed is there
    again = ReadingQueue(AgentStore(tmp_path / "agent.db"), max_readings=100, max_age_s=3600, clock=clock)
    assert len(again) == 3 and again.next_seq == 6
    oldest = again.oldest(below=again.next_seq, limit=10)
    assert [q.seq for q in oldest] == [3, 4, 5]
    assert decode(Reading, oldest[0].payload).seq == 3
    assert again.add(reading_at(clock)).reading.seq == 6  # a restart never reuses a number


def test_the_count_bound_drops_the_oldest_and_counts_them(tmp_path: Path) -> None:
    clock = Clock()
    queue = ReadingQueue(AgentStore(tmp_path / "agent.db"), max_readings=3, max_age_s=3600, clock=clock)
    drops = [queue.add(reading_at(clock)).dropped for _ in range(7)]
    assert drops == [0, 0, 0, 1, 1, 1, 1]
    assert [q.seq for q in queue.oldest(below=100, limit=10)] == [5, 6, 7]
    assert queue.dropped == 4 and queue.unreported_drops() == 4
    queue.drops_reported(4)
    assert queue.unreported_drops() == 0 and queue.dropped == 4


def test_the_age_bound_drops_readings_older_than_it(tmp_path: Path) -> None:
    clock = Clock()
    queue = ReadingQueue(AgentStore(tmp_path / "agent.db"), max_readings=100, max_age_s=60, clock=clock)
    for _ in range(3):
        queue.add(reading_at(clock))
        clock.now += timedelta(seconds=25)
    added = queue.add(reading_at(clock))  # now T0 + 75 s: the first (T0) is older than 60 s
    assert added.dropped == 1 and added.reading.seq == 4
    assert [q.seq for q in queue.oldest(below=100, limit=10)] == [2, 3, 4] and queue.dropped == 1


def test_a_disk_that_refuses_writes_keeps_the_queue_in_memory_until_it_takes_them_again(tmp_path: Path) -> None:
    clock = Clock()
    store = AgentStore(tmp_path / "agent.db")
    queue = ReadingQueue(store, max_readings=100, max_age_s=3600, clock=clock, max_memory=3)
    for _ in range(3):
        queue.add(reading_at(clock))
    store.db.execute("PRAGMA query_only=1")  # SQLite refuses every write from here, as on a full disk
    added = [queue.add(reading_at(clock)) for _ in range(4)]
    assert [a.reading.seq for a in added] == [4, 5, 6, 7]  # numbering goes on in memory
    assert queue.storage_error and queue.in_memory == 3 and added[-1].dropped == 1 and queue.dropped == 1
    queue.remove([1, 6])  # acknowledged: one row on disk, one in memory
    assert len(queue) == 4 and [q.seq for q in queue.oldest(below=100, limit=10)] == [2, 3, 5, 7]
    assert not queue.persist()  # still refused: nothing changes
    assert len(queue) == 4 and queue.storage_error

    store.db.execute("PRAGMA query_only=0")
    assert queue.persist() and queue.storage_error is None and queue.in_memory == 0
    store.close()
    again = ReadingQueue(AgentStore(tmp_path / "agent.db"), max_readings=100, max_age_s=3600, clock=clock)
    assert [q.seq for q in again.oldest(below=100, limit=10)] == [2, 3, 5, 7]
    assert again.next_seq == 8 and again.dropped == 1 and again.unreported_drops() == 1


def test_a_restart_after_a_crash_on_a_refusing_disk_never_gives_a_number_twice(tmp_path: Path) -> None:
    clock = Clock()
    store = AgentStore(tmp_path / "agent.db")
    queue = ReadingQueue(store, max_readings=100, max_age_s=3600, clock=clock)
    queue.add(reading_at(clock))
    store.db.execute("PRAGMA query_only=1")
    assert [queue.add(reading_at(clock)).reading.seq for _ in range(3)] == [2, 3, 4]
    store.close()  # killed before the disk took writes again: readings 2 to 4 went out live, and are lost here
    again = ReadingQueue(AgentStore(tmp_path / "agent.db"), max_readings=100, max_age_s=3600, clock=clock)
    assert len(again) == 1 and again.add(reading_at(clock)).reading.seq == 5
