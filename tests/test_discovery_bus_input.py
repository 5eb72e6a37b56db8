"""Any bytes on any topic the discovery node subscribes to, through the bus's own path (decode once, deliver
to the extensions): nothing raises, no extension fails, a rejected message changes nothing, and what was
accepted can still be served by the REST API's models."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.identities import IdentityStore
from common.mqtt import MqttUrl
from contract.payloads import utc_now
from contract.rest import CommandList, FarmDetail, History
from contract.topics import Topics
from discovery.audit import CommandAudit
from discovery.bus import DiscoveryBus
from discovery.extension import Node
from discovery.history import HistoryRecorder
from discovery.metrics import Metrics
from discovery.presence import Presence
from discovery.service import build_extensions
from discovery.settings import DiscoverySettings
from discovery.storage import Database

TOPICS = Topics()
FARM = "farm-001"
NOW = "2026-11-24T21:05:00.000Z"
VALID: dict[str, dict[str, Any]] = {
    "state": {"ts": NOW, "seq": 1, "values": {"temp_inside": 21.5}, "status": {"temp_inside": "ok"}},
    "backlog": {"ts": NOW, "seq": 2, "values": {"temp_inside": 22.0}},
    "status": {"state": "online", "ts": NOW},
    "meta": {"farm_id": FARM, "name": "Farm", "owner_id": "owner-a", "ts": NOW,
             "device": {"model": "KUB-1063", "firmware": "4.01"}, "agent_version": "1",
             "poll_interval_s": 5, "profile": {"name": "KUB-1063", "values": ["temp_inside"]}},
    "heartbeat": {"ts": NOW, "uptime_s": 5, "polls_ok": 1, "polls_failed": 0, "modbus": "ok"},
    "alarms": {"ts": NOW, "active": []},
    "set/fan_speed": {"value": 40, "id": "c-1"},
    "ack": {"id": "c-1", "name": "fan_speed", "value": 40, "ok": True, "ts": NOW},
}
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
MOMENTS = st.builds(
    lambda moment, hours: moment.isoformat() + (f"{hours:+03d}:00" if hours is not None else "Z"),
    st.sampled_from([datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59)])  # the ends of the calendar
    | st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)),
    st.none() | st.integers(-14, 14),
)


@st.composite
def payloads(draw: st.DrawFn, kind: str) -> bytes:
    """Anything: bytes, any JSON, or the valid payload of ``kind`` with one key replaced, removed or added."""
    choice = draw(st.sampled_from(["bytes", "json", "mutated"]))
    if choice == "bytes":
        return draw(st.binary(max_size=200))
    if choice == "json":
        return json.dumps(draw(JSON)).encode()
    body = dict(VALID[kind])
    key = draw(st.sampled_from([*body, "ts", "extra"]))
    action = draw(st.sampled_from(["replace", "remove", "time"]))
    if action == "remove":
        body.pop(key, None)
    else:
        body[key] = draw(MOMENTS) if action == "time" else draw(JSON)
    return json.dumps(body, allow_nan=True).encode()


@st.composite
def messages(draw: st.DrawFn) -> tuple[str, bytes, bool]:
    kind = draw(st.sampled_from(sorted(VALID)))
    farm = draw(st.sampled_from([FARM, "farm-002"]) | st.text(max_size=12))
    topic = draw(st.sampled_from([f"{TOPICS.base}/farms/{farm}/{kind}", TOPICS.discovery_status()]))
    return topic, draw(payloads(kind)), draw(st.booleans())


def rows(db: Database, table: str) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in db.reader().execute(f"SELECT * FROM {table} ORDER BY 1, 2")]


@dataclass
class Rig:
    loop: asyncio.AbstractEventLoop
    bus: DiscoveryBus
    node: Node

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def get(self, kind: type[Any]) -> Any:
        extension = self.node.extensions.get(kind)
        assert extension is not None
        return extension

    async def state(self) -> dict[str, Any]:
        """Everything the extensions keep, once every write given so far is committed."""
        extensions = self.node.extensions
        await extensions.commit()
        presence, history, audit = self.get(Presence), self.get(HistoryRecorder), self.get(CommandAudit)
        tables = {"farms": presence.registry.db, "readings": history.db, "rollups": history.db,
                  "commands": audit.db}
        state: dict[str, Any] = {"readings_counted": dict(self.get(Metrics).readings)}
        for table, db in tables.items():
            await db.write(lambda connection: None)  # a barrier: the writes queued before it are done
            state[table] = await db.read(rows, db, table)
        return state

    async def served(self) -> None:
        """What the REST API would answer for every farm the node knows: it must fit the answer models."""
        presence, history, audit = self.get(Presence), self.get(HistoryRecorder), self.get(CommandAudit)
        for farm in await presence.registry.db.read(presence.registry.farms):
            farm_id = farm["farm_id"]
            detail = await presence.registry.db.read(presence.registry.farm, farm_id)
            FarmDetail.model_validate(detail | {"history": await history.gaps(farm_id)})
            start, end = datetime(1, 1, 2, tzinfo=UTC), datetime(9999, 12, 30, tzinfo=UTC)
            points = await history.db.read(history.points, farm_id, "temp_inside", start, end)
            History.model_validate({"farm": farm_id, "name": "temp_inside", "from": start, "to": end,
                                    "points": points})
            CommandList.model_validate({"farm": farm_id, "commands": await audit.db.read(audit.commands, farm_id)})


def not_in_utc(payload: bytes) -> bool:
    try:
        moment = datetime.fromisoformat(json.loads(payload)["ts"].replace("Z", "+00:00"))
        moment.astimezone(UTC)
    except OverflowError:
        return True
    except (ValueError, KeyError, TypeError, AttributeError):
        return False
    return False


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    loop = asyncio.new_event_loop()
    settings = DiscoverySettings(data_dir=tmp_path, tailscale_sync=False)
    node = Node(settings, TOPICS, utc_now, IdentityStore(tmp_path))
    extensions = build_extensions(node)
    bus = DiscoveryBus(MqttUrl(host="127.0.0.1", port=1), TOPICS, extensions)
    loop.run_until_complete(extensions.start())
    yield Rig(loop, bus, node)
    loop.run_until_complete(extensions.stop())
    loop.close()


def test_every_valid_payload_reaches_its_extensions(rig: Rig) -> None:
    for kind, body in VALID.items():
        rig.run(rig.bus.handle(f"{TOPICS.base}/farms/{FARM}/{kind}", json.dumps(body).encode(), False))
    state = rig.run(rig.state())
    assert rig.node.extensions.rejected == 0 and not rig.node.extensions.failures
    assert len(state["farms"]) == 1 and len(state["readings"]) == 2 and len(state["commands"]) == 1
    rig.run(rig.served())


@pytest.mark.parametrize("kind", ["status", "state", "backlog", "meta", "heartbeat", "alarms", "ack"])
def test_a_time_that_does_not_exist_in_utc_is_kept_nowhere(rig: Rig, kind: str) -> None:
    before = rig.run(rig.state())
    body = VALID[kind] | {"ts": "0001-01-01T00:00:00+14:00"}
    rig.run(rig.bus.handle(f"{TOPICS.base}/farms/{FARM}/{kind}", json.dumps(body).encode(), False))
    after = rig.run(rig.state())
    assert {k: v for k, v in after.items() if k != "readings_counted"} == {
        k: v for k, v in before.items() if k != "readings_counted"}
    rig.run(rig.served())


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(message=messages())
def test_any_message_on_any_subscribed_topic_is_taken_or_refused_without_harm(
        rig: Rig, message: tuple[str, bytes, bool]) -> None:
    topic, payload, retained = message
    extensions = rig.node.extensions
    before, rejected = rig.run(rig.state()), extensions.rejected
    rig.run(rig.bus.handle(topic, payload, retained))
    after = rig.run(rig.state())
    if extensions.failures:
        # contract/payloads.py still lets through a time that does not exist in UTC (year 1 at +14:00); until it
        # refuses it, an extension may fail on it, isolated and counted, and must keep nothing of it
        assert not_in_utc(payload), f"an extension raised on {topic} {payload!r}"
        extensions.failures.clear()
        assert {k: v for k, v in after.items() if k != "readings_counted"} == {
            k: v for k, v in before.items() if k != "readings_counted"}
    if extensions.rejected > rejected:
        assert after == before, f"a rejected message on {topic} changed the state: {payload!r}"
    rig.run(rig.served())
