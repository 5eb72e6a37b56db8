"""History retention: raw readings older than raw_days are folded into min/max/avg rows, which the
history query serves in their place; rows older than keep_days go; on both backends (PostgreSQL drops whole
partitions)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from contract.messages import decode_message
from contract.payloads import Reading, encode
from contract.topics import Topics
from discovery.history import HistoryRecorder, Retention
from discovery.storage import Storage

NOW = datetime(2026, 11, 24, 21, 0, tzinfo=UTC)
TOPIC = "kub/farms/farm-001/backlog"


async def test_old_readings_are_downsampled_and_still_charted(storage: Storage) -> None:
    history = HistoryRecorder(storage.history(1), Topics(), lambda: NOW,
                              Retention(raw_days=1, rollup_step=600, keep_days=3), retention_every_s=3600)

    async def receive(reading: Reading) -> None:
        await history.on_message(decode_message(Topics(), TOPIC, encode(reading)))

    await history.start()
    old = NOW - timedelta(days=2)  # older than raw_days: folded into 10-minute rows
    for seq, minutes in enumerate(range(0, 20), start=1):  # 20 readings a minute apart: buckets of 10
        await receive(Reading(ts=old + timedelta(minutes=minutes), seq=seq,
                              values={"temp_inside": float(minutes), "co2": None}))
    await receive(Reading(ts=NOW - timedelta(days=5), seq=100, values={"temp_inside": 1.0}))  # past keep_days too
    await receive(Reading(ts=NOW - timedelta(hours=1), seq=101, values={"temp_inside": 30.0}))  # recent: stays raw
    await history.commit()
    await history.apply_retention()
    read = history.db.read
    points = await read(history.points, "farm-001", "temp_inside", NOW - timedelta(days=4), NOW)
    assert [(p["min"], p["max"], p["avg"], p["count"]) for p in points[:2]] == [(0, 9, 4.5, 10), (10, 19, 14.5, 10)]
    assert points[2] == {"ts": datetime(2026, 11, 24, 20, 0, tzinfo=UTC), "value": 30.0}
    assert len(points) == 3  # the 5-day-old reading is gone
    assert await read(history.points, "farm-001", "co2", NOW - timedelta(days=4), NOW) == []  # nulls: not averaged
    hourly = await read(history.points, "farm-001", "temp_inside", NOW - timedelta(days=4), NOW, step=3600)
    assert [(p["min"], p["max"], p["count"]) for p in hourly] == [(0, 19, 20), (30.0, 30.0, 1)]
    assert (await history.gaps("farm-001"))["readings"] == 1  # raw rows; the folded ones live on as rollups
    await history.stop()
