"""The farm page's gap count (kept up to date by the writes and retention on SQLite, counted by the server on
PostgreSQL) always equals the one counted from the seq numbers stored, whatever order readings come in (live,
replayed, repeated, in batches), whatever retention folds away, and whenever it is asked; on both backends."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contract.messages import FarmMessage
from contract.payloads import Reading
from contract.topics import FarmTopic, Topics
from discovery.gaps import SeqRuns
from discovery.history import HistoryRecorder, Retention
from discovery.storage import Storage

NOW = datetime(2026, 11, 24, 21, 0, tzinfo=UTC)
FARMS = ("farm-001", "farm-002")


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def history(storage: Storage) -> Iterator[tuple[asyncio.AbstractEventLoop, HistoryRecorder]]:
    loop = asyncio.new_event_loop()
    # a reading an hour apart (over three days: PostgreSQL's day partitions, its default one, the day runs it
    # keeps), raw readings kept an hour, folded by the hour: a fold at k takes every reading with seq < k
    recorder = HistoryRecorder(storage.history(1 / 24), Topics(), Clock(), Retention(1 / 24, 3600, 365))
    loop.run_until_complete(recorder.start())
    yield loop, recorder
    loop.run_until_complete(recorder.stop())
    loop.close()


def reading(farm_id: str, seq: int) -> FarmMessage[Any]:
    return FarmMessage(farm_id, FarmTopic.BACKLOG, Reading(ts=NOW + timedelta(hours=seq), seq=seq,
                                                           values={"t": 1.0}))


# batches of (farm, seq); None asks for the gaps there; a number k has retention fold away every seq < k
STEPS = st.lists(st.none() | st.integers(0, 40)
                 | st.lists(st.tuples(st.sampled_from(FARMS), st.integers(0, 40)), max_size=12), max_size=12)


def count_again(recorder: HistoryRecorder, farm_id: str) -> dict[str, Any]:
    """The summary counted here, in Python, from the seq numbers the store holds."""
    seqs = recorder.store.seqs(farm_id)
    runs = sum(1 for i, seq in enumerate(seqs) if i == 0 or seqs[i - 1] != seq - 1)
    return SeqRuns(len(seqs), seqs[0] if seqs else None, seqs[-1] if seqs else None, runs).report()


EXAMPLES = itertools.count()


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(steps=STEPS)
def test_the_kept_gap_count_equals_the_counted_one(history: tuple[asyncio.AbstractEventLoop, HistoryRecorder],
                                                   steps: list[list[tuple[str, int]] | int | None]) -> None:
    loop, recorder = history
    # fresh farms for every example, one database: a counter, since id() of a freed list comes back
    example = next(EXAMPLES)
    farms = tuple(f"{farm}-{example}" for farm in FARMS)

    async def run() -> None:
        for step in steps:
            if step is None:
                for farm in farms:
                    await recorder.gaps(farm)  # from here on, this farm's summary is kept by the writes
                continue
            if isinstance(step, int):
                recorder.clock.now = NOW + timedelta(hours=step + 1)  # type: ignore[attr-defined]
                await recorder.apply_retention()
                continue
            for farm, seq in step:
                await recorder.on_message(reading(farms[FARMS.index(farm)], seq))
            await recorder.commit()
        for farm in farms:
            counted = await recorder.db.read(count_again, recorder, farm)
            assert await recorder.gaps(farm) == counted, (farm, steps)

    loop.run_until_complete(run())
