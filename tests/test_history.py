"""The history recorder of a real discovery process: readings from ``state`` and ``backlog`` stored once by
seq, served raw or downsampled, gaps counted, bad queries refused with a reason; on SQLite and on PostgreSQL."""

from __future__ import annotations

import csv
import io
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from common.identities import Role
from contract.payloads import Reading, Status, encode, format_ts, utc_now
from tests.helpers import wait_until
from tests.test_discovery import FARM, TOKEN, Discovery, farm_client, publish, start_discovery

START = utc_now().replace(second=0, microsecond=0) - timedelta(minutes=10)


@pytest.fixture
def node(tmp_path: Path, data_dir: Path, database_env: dict[str, str]) -> Iterator[Discovery]:
    running = start_discovery(tmp_path, data_dir, database_env)
    wait_until(lambda: running.get("/health")[1]["broker"] == "connected", 10, what="discovery connected")
    yield running
    running.process.stop()


def reading(seq: int, temp: float | None) -> bytes:
    return encode(Reading(ts=START + timedelta(seconds=seq), seq=seq, values={"temp_inside": temp, "humidity": 50}))


def history(node: Discovery, **query: str) -> tuple[int, dict[str, object]]:
    return node.get(f"/api/farms/{FARM}/history?{urllib.parse.urlencode(query)}")  # type: ignore[no-any-return]


def test_readings_are_stored_once_by_seq_and_gaps_are_counted(node: Discovery) -> None:
    client = farm_client(node.mqtt_port, node.store.add(FARM, Role.FARM))
    try:
        publish(client, "status", encode(Status(state="online", ts=utc_now())))
        for seq in (1, 2, 3, 6, 7, 10):  # 4-5 and 8-9 never sent: two gaps, four readings missing
            publish(client, "state", reading(seq, 20.0 + seq))
        for seq in (2, 3, 6):  # replayed again after a reconnect: stored once
            publish(client, "backlog", reading(seq, 20.0 + seq), retain=False)
        summary = wait_until(lambda: (f := node.get(f"/api/farms/{FARM}")[1]).get("history", {}).get(
            "readings") == 6 and f["history"], 10, what="six readings stored")
        assert summary == {"readings": 6, "first_seq": 1, "last_seq": 10, "gaps": 2, "missing": 4}
        status, body = history(node, name="temp_inside", **{"from": format_ts(START)})
        assert status == 200 and body["farm"] == FARM and body["name"] == "temp_inside"
        assert [p["value"] for p in body["points"]] == [21.0, 22.0, 23.0, 26.0, 27.0, 30.0]  # type: ignore[attr-defined]
        assert body["points"][0]["ts"] == format_ts(START + timedelta(seconds=1))  # type: ignore[index]
    finally:
        client.loop_stop()


def test_a_step_gives_min_max_avg_per_bucket(node: Discovery) -> None:
    client = farm_client(node.mqtt_port, node.store.add(FARM, Role.FARM))
    try:
        publish(client, "status", encode(Status(state="online", ts=utc_now())))
        for seq in range(1, 21):
            publish(client, "backlog", reading(seq, float(seq) if seq != 5 else None), retain=False)
        wait_until(lambda: node.get(f"/api/farms/{FARM}")[1]["history"]["readings"] == 20, 10, what="stored")
        status, body = history(node, name="temp_inside", step="10s", **{"from": format_ts(START)})
        assert status == 200 and body["step"] == 10
        points = body["points"]
        assert [(p["min"], p["max"], p["count"]) for p in points] == [  # type: ignore[attr-defined]
            (1.0, 9.0, 8), (10.0, 19.0, 10), (20.0, 20.0, 1)]  # seq 5 was a sensor break (null): not averaged
        assert points[1]["avg"] == points[1]["value"] == 14.5  # type: ignore[index]
    finally:
        client.loop_stop()


def test_bad_history_queries_get_400_with_a_reason_and_unknown_farms_404(node: Discovery) -> None:
    client = farm_client(node.mqtt_port, node.store.add(FARM, Role.FARM))
    publish(client, "status", encode(Status(state="online", ts=utc_now())))
    client.loop_stop()
    wait_until(lambda: node.get(f"/api/farms/{FARM}")[0] == 200, 10, what="farm known")
    for query in ({}, {"name": "Temp Inside"}, {"name": "t", "from": "yesterday"}, {"name": "t", "to": "12:00"},
                  {"name": "t", "step": "-5"}, {"name": "t", "step": "5 minutes"}, {"name": "t", "step": "0"},
                  {"name": "t", "from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
                  {"name": "t", "from": "2025-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
                  {"name": "t", "from": "2025-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z", "step": "1s"}):
        status, body = history(node, **query)
        assert status == 400 and body["error"] == "invalid history query" and body["detail"], (query, body)
    assert node.get("/api/farms/nobody/history?name=temp_inside")[0] == 404
    assert node.get(f"/api/farms/{FARM}/history?name=temp_inside", token=None)[0] == 401
    status, body = history(node, name="temp_inside")
    assert status == 200 and body["points"] == []


def get_csv(node: Discovery, query: list[tuple[str, str]]) -> tuple[int, str, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{node.api_port}/api/farms/{FARM}/history.csv?"
                                     f"{urllib.parse.urlencode(query)}", headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


def test_history_as_csv_in_the_readers_time_zone_and_decimal_mark(node: Discovery) -> None:
    client = farm_client(node.mqtt_port, node.store.add(FARM, Role.FARM))
    try:
        publish(client, "status", encode(Status(state="online", ts=utc_now())))
        for seq, temp in ((1, 21.5), (2, None), (3, -0.5)):
            publish(client, "state", reading(seq, temp))
        wait_until(lambda: node.get(f"/api/farms/{FARM}")[1].get("history", {}).get("readings") == 3, 10,
                   what="three readings stored")
    finally:
        client.loop_stop()
    query = [("name", "temp_inside"), ("name", "humidity"), ("from", format_ts(START)), ("tz", "Europe/Moscow")]
    status, content_type, body = get_csv(node, [*query, ("decimal", ",")])
    assert status == 200 and content_type.startswith("text/csv"), body
    assert body.startswith(b"\xef\xbb\xbf"), "Excel needs the BOM to read UTF-8"
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig")), delimiter=";"))
    moscow = ZoneInfo("Europe/Moscow")
    assert rows[0] == ["time (Europe/Moscow)", "temp_inside", "humidity"]
    assert rows[1:] == [
        [(START + timedelta(seconds=1)).astimezone(moscow).strftime("%Y-%m-%d %H:%M:%S"), "21,5", "50"],
        [(START + timedelta(seconds=2)).astimezone(moscow).strftime("%Y-%m-%d %H:%M:%S"), "", "50"],
        [(START + timedelta(seconds=3)).astimezone(moscow).strftime("%Y-%m-%d %H:%M:%S"), "-0,5", "50"],
    ]
    status, _, body = get_csv(node, query)  # the default: a dot, fields by commas
    assert list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))[1][1] == "21.5"
    for bad in ([("name", "temp_inside"), ("tz", "Mars/Olympus")], [("name", "temp_inside"), ("decimal", ";")],
                [("tz", "UTC")], [("name", "Temp Inside")]):
        status, content_type, body = get_csv(node, bad)
        assert status == 400 and "application/json" in content_type, (bad, body)
