"""The alerting service on a fake clock, fed typed messages as the node's bus hands them over, with real
channels (a local HTTP receiver), a real store on each backend (SQLite in the data dir, and PostgreSQL) and the
real REST API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from common.identities import IdentityStore, Role
from contract.messages import AlertAckMessage, FarmMessage, MessageError, decode_message
from contract.payloads import AlarmItem, Alarms, Event, FarmAlerts, Heartbeat, Meta, Reading, Status, decode, encode
from contract.topics import Topics
from discovery.alerting.api import add_alert_routes
from discovery.alerting.channels import Channels
from discovery.alerting.engine import Timing
from discovery.alerting.rules import load_rules
from discovery.alerting.service import AlertingConfig, AlertingService
from discovery.alerting.store import FILE, SCHEMA, AlertStore, Step
from discovery.api import create_api
from discovery.audit import SCHEMA as AUDIT_SCHEMA
from discovery.audit import CommandAudit
from discovery.history import HistoryRecorder
from discovery.registry import SCHEMA as REGISTRY_SCHEMA
from discovery.registry import Registry
from discovery.sqlite import SqliteStorage
from discovery.storage import Storage
from tests.alert_receivers import HttpReceiver
from tests.helpers import free_port

TOPICS = Topics()
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
TIMING = Timing(delay=30, remind_interval=600, escalate_after=900)
API_TOKEN = "static-token-for-tests"


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def message(topic: str, payload: Any, retained: bool = False) -> FarmMessage[Any]:
    decoded = decode_message(TOPICS, topic, encode(payload), retained)
    assert isinstance(decoded, FarmMessage)
    return decoded


def ack_message(topic: str, payload: bytes) -> AlertAckMessage:
    decoded = decode_message(TOPICS, topic, payload)
    assert isinstance(decoded, AlertAckMessage)
    return decoded


def meta(farm: str, owner: str = "owner-a") -> FarmMessage[Any]:
    return message(TOPICS.meta(farm), Meta.model_validate({
        "farm_id": farm, "name": "Птичник №1", "owner_id": owner, "device": {"model": "KUB-1063"},
        "agent_version": "1", "poll_interval_s": 5, "profile": {"name": "kub1063", "values": []}, "ts": T0}))


def alarms(farm: str, ts: datetime, *bits: int, warnings: tuple[int, ...] = ()) -> FarmMessage[Any]:
    return message(TOPICS.alarms(farm), Alarms(
        ts=ts, active=[AlarmItem(bit=b, label=f"alarm bit {b}") for b in bits],
        latched=[AlarmItem(bit=b, label=f"alarm bit {b}") for b in bits],
        warnings=[AlarmItem(bit=b, label=f"warning bit {b}") for b in warnings]))


def heartbeat(farm: str, ts: datetime, modbus: str = "ok", retained: bool = False) -> FarmMessage[Any]:
    return message(TOPICS.heartbeat(farm), Heartbeat(ts=ts, uptime_s=1, polls_ok=1, polls_failed=0,
                                                     modbus=modbus), retained)  # type: ignore[arg-type]


class Rig:
    """A data dir with users and channels, the service, its published alerts and the receiver."""

    def __init__(self, data_dir: Path, receiver: HttpReceiver, storage: Storage) -> None:
        self.data_dir = data_dir
        self.storage = storage
        self.receiver = receiver
        self.clock = FakeClock()
        self.identities = IdentityStore(data_dir)
        self.published: dict[str, FarmAlerts] = {}
        self.service: AlertingService | None = None
        self.alive: set[str] = {"farm-001", "farm-009"}  # farms whose heartbeat comes before each step
        self.book = load_rules()

    def channel(self, user: str, path: str, tier: int = 1, severity: str = "warning", **prefs: str) -> str:
        from discovery.alerting.kinds import Severity

        url = self.receiver.url("json", path)
        store = self.store()
        store.open()
        store.add_channel(user, url, Severity(severity), tier)
        if prefs:
            store.set_preferences(user, **prefs)
        store.close()
        return url

    def store(self) -> AlertStore:
        return AlertStore(self.storage.database(FILE, SCHEMA))

    async def start(self) -> AlertingService:
        config = AlertingConfig(TIMING, silent_after=120, book=self.book, link_url="http://phone.test:5000",
                                tick_interval=3600)
        self.service = AlertingService(config, self.store(), self.identities, TOPICS,
                                       Channels(None, retries=1, backoff=0.01), self.clock)

        async def publish(topic: str, payload: bytes) -> None:
            self.published[topic] = decode(FarmAlerts, payload)

        await self.service.start(publish)
        return self.service

    async def feed(self, *messages: FarmMessage[Any]) -> None:
        assert self.service is not None
        for item in messages:
            self.service.on_message(item)

    async def at(self, seconds: float) -> None:
        """Move the clock to T0 + seconds and let the service act on it, sends included."""
        assert self.service is not None
        self.clock.now = T0 + timedelta(seconds=seconds)
        for farm in sorted(self.alive & set(self.service.watches)):
            self.service.on_message(heartbeat(farm, self.clock.now))
        await self.service.tick()
        await self.service.drain()
        await self.service.dispatcher.flush()

    def bodies(self, path: str) -> list[str]:
        return [r.json()["title"] + "\n" + r.json()["message"] for r in self.receiver.on(path)]


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    server = HttpReceiver().start()
    yield server
    server.stop()


@pytest.fixture
async def rig(data_dir: Path, receiver: HttpReceiver, storage: Storage) -> AsyncIterator[Rig]:
    rig = Rig(data_dir, receiver, storage)
    rig.identities.add("farmer", Role.OPERATOR, owner="owner-a", password="pw-farmer-1")
    rig.identities.add("boss", Role.ADMIN, password="pw-boss-1")
    rig.identities.add("neighbour", Role.OPERATOR, owner="owner-b", password="pw-neighbour")
    rig.identities.add("watcher", Role.VIEWER, owner="owner-a", password="pw-watcher-1")
    yield rig
    if rig.service is not None:
        await rig.service.stop()


async def test_an_alarm_bit_is_told_once_per_farm_then_reminded_until_acknowledged(rig: Rig) -> None:
    rig.channel("farmer", "/farmer")
    rig.channel("neighbour", "/neighbour")  # another owner's farm: never told
    service = await rig.start()
    await rig.feed(meta("farm-001"), alarms("farm-001", T0, 3, 7))
    await rig.at(29)
    assert rig.bodies("/farmer") == []
    await rig.at(30)
    [first] = rig.bodies("/farmer")
    assert first.startswith("[КРИТИЧНО] Птичник №1: 2 тревог")  # both bits in one message
    assert "авария, бит 3" in first and "авария, бит 7" in first
    assert "http://phone.test:5000/farms/farm-001" in first
    published = rig.published[TOPICS.alerts("farm-001")]
    assert sorted(a.message for a in published.alerts) == ["Controller alarm: alarm bit 3",
                                                           "Controller alarm: alarm bit 7"]
    await rig.at(629)
    assert len(rig.bodies("/farmer")) == 1
    await rig.at(630)
    assert "ВСЁ ЕЩЁ НЕ ПОДТВЕРЖДЕНА" in rig.bodies("/farmer")[1]
    acknowledged = await service.acknowledge_farm("farm-001", None, "farmer", via="web")
    assert len(acknowledged) == 2
    await rig.at(1230)
    await rig.at(1900)
    assert len(rig.bodies("/farmer")) == 2 and rig.bodies("/neighbour") == []
    assert {a.state for a in rig.published[TOPICS.alerts("farm-001")].alerts} == {"acknowledged"}


async def test_escalation_reaches_tier_two_and_the_all_clear_everyone_told(rig: Rig) -> None:
    rig.channel("farmer", "/farmer")
    rig.channel("boss", "/boss", tier=2)
    await rig.start()
    await rig.feed(meta("farm-001"), alarms("farm-001", T0, 3))
    await rig.at(30)
    assert rig.bodies("/boss") == []
    await rig.at(930)
    [escalated] = rig.bodies("/boss")
    assert "НОВАЯ: Авария контроллера: авария, бит 3" in escalated
    await rig.feed(alarms("farm-001", T0 + timedelta(seconds=1000)))  # the bit left the active group
    await rig.at(1001)
    assert "ОТБОЙ" in rig.bodies("/farmer")[-1] and "ОТБОЙ" in rig.bodies("/boss")[-1]
    assert rig.published[TOPICS.alerts("farm-001")].alerts == []


async def test_when_no_tier_one_channel_delivers_it_escalates_at_once(rig: Rig) -> None:
    rig.channel("farmer", "/farmer")
    rig.channel("boss", "/boss", tier=2)
    rig.receiver.failing_status = 503  # every channel of the receiver fails …
    service = await rig.start()
    await rig.feed(meta("farm-001"), alarms("farm-001", T0, 3))
    await rig.at(30)
    rig.receiver.failing_status = None  # … until tier 2 is tried
    await rig.at(31)
    assert len(rig.bodies("/boss")) == 1 and rig.bodies("/farmer") == []
    store = service.store.store
    [farmer_channel] = await service.store.call(store.channels, "farmer")
    assert farmer_channel.failing and "503" in (farmer_channel.last_error or "")
    steps = [(s.step, s.username, s.delivered) for s in reversed(await service.store.call(store.steps, "farm-001"))]
    assert steps == [("opened", "farmer", False), ("escalated", "boss", True)]


async def test_quiet_hours_hold_warnings_back_and_let_critical_alerts_through(rig: Rig) -> None:
    rig.channel("farmer", "/farmer", language="en", quiet_start="11:00", quiet_end="13:00", timezone="UTC")
    await rig.start()
    await rig.feed(meta("farm-001"), alarms("farm-001", T0, warnings=(2,)))
    await rig.at(30)
    assert rig.bodies("/farmer") == []  # noon: a warning waits
    await rig.feed(alarms("farm-001", T0 + timedelta(seconds=40), 5, warnings=(2,)))
    await rig.at(70)
    [critical] = rig.bodies("/farmer")
    assert "alarm bit 5" in critical and "warning bit 2" not in critical
    await rig.at(3630)  # 13:00:30, quiet hours over: the next reminder brings the warning
    assert "warning bit 2" in rig.bodies("/farmer")[-1]


async def test_a_restart_neither_repeats_acknowledged_alerts_nor_forgets_open_ones(rig: Rig) -> None:
    rig.channel("farmer", "/farmer")
    service = await rig.start()
    await rig.feed(meta("farm-001"), alarms("farm-001", T0, 3, 4))
    await rig.at(30)
    bit3 = next(a for a in service.engine.alerts() if a.key == "alarm:3")
    await service.acknowledge(bit3.id, "farmer", via="rest")
    await service.stop()

    service = await rig.start()  # the node restarted: retained messages come again
    await rig.feed(meta("farm-001", ), alarms("farm-001", T0, 3, 4, ), heartbeat("farm-001", T0, retained=True))
    await rig.at(300)
    assert len(rig.bodies("/farmer")) == 1  # nothing told again
    await rig.at(630)
    [_, reminder] = rig.bodies("/farmer")
    assert "бит 4" in reminder and "бит 3" not in reminder
    assert {a.key: a.state for a in service.engine.alerts()} == {"alarm:3": "acknowledged", "alarm:4": "open"}


async def test_a_farm_heard_from_no_more_goes_silent_and_comes_back(rig: Rig) -> None:
    rig.channel("farmer", "/farmer", language="en")
    rig.alive.clear()
    await rig.start()
    await rig.feed(meta("farm-001"), heartbeat("farm-001", T0))
    await rig.at(120)
    assert rig.bodies("/farmer") == []
    await rig.at(121)  # 120 s of silence: the condition holds from now
    await rig.at(150)
    assert rig.bodies("/farmer") == []
    await rig.at(151)
    [silent] = rig.bodies("/farmer")
    assert "Farm silent (nothing heard)" in silent
    await rig.feed(heartbeat("farm-001", T0 + timedelta(seconds=200)))
    await rig.at(200)
    assert "ALL CLEAR" in rig.bodies("/farmer")[-1]


async def test_a_last_will_and_a_dead_controller_are_critical(rig: Rig) -> None:
    rig.channel("farmer", "/farmer", language="en")
    await rig.start()
    rig.alive.clear()
    await rig.feed(meta("farm-001"), message(TOPICS.status("farm-001"), Status(state="offline", ts=T0)),
                   heartbeat("farm-001", T0, modbus="error"))
    await rig.at(30)
    [both] = rig.bodies("/farmer")
    assert "Farm silent (the agent's connection was lost)" in both and "Controller not answering" in both


async def test_value_rules_and_sensor_faults_from_readings(rig: Rig) -> None:
    rig.channel("farmer", "/farmer", language="en")
    await rig.start()
    reading = Reading(ts=T0, seq=1, values={"temp_inside": 31.5, "temp_target": 26.0, "co2": None},
                      status={"co2": "break"})
    await rig.feed(meta("farm-001"), message(TOPICS.state("farm-001"), reading))
    await rig.at(30)
    [body] = rig.bodies("/farmer")
    assert "Inside temperature > temp_target + 4 °C" in body and "now 31.5 °C" in body
    assert "Sensor fault: co2 — sensor wire broken" in body
    # a replayed backlog reading is old news: it raises nothing
    old = Reading(ts=T0 - timedelta(hours=3), seq=0, values={"nh3": 80.0})
    await rig.feed(message(TOPICS.backlog("farm-001"), old))
    await rig.at(100)
    assert len(rig.bodies("/farmer")) == 1


async def test_readings_lost_open_at_once_and_close_when_acknowledged(rig: Rig) -> None:
    rig.channel("farmer", "/farmer", language="en")
    service = await rig.start()
    await rig.feed(meta("farm-001"), message(TOPICS.events("farm-001"), Event(
        ts=T0, kind="backlog_dropped", message="backlog full", detail={"dropped": 17})))
    await rig.at(0)
    assert "Readings lost: 17 readings dropped by a full backlog" in rig.bodies("/farmer")[0]
    [alert] = service.engine.alerts()
    await service.acknowledge(alert.id, "farmer", via="rest")
    assert service.engine.alerts() == []


async def test_acknowledgement_over_mqtt_is_for_operators_of_the_farm(rig: Rig) -> None:
    rig.channel("farmer", "/farmer")
    service = await rig.start()
    await rig.feed(meta("farm-001"), alarms("farm-001", T0, 3))
    await rig.at(30)
    topic = TOPICS.alerts_ack("farm-001")
    for refused in (b'{"by": "neighbour"}', b'{"by": "watcher"}', b'{"by": "nobody"}', b'{"by": "farmer", "id": "x"}'):
        await service.on_ack(ack_message(topic, refused))
    for undecodable in (b"not json", b'{"id": 1}', b"{}"):
        with pytest.raises(MessageError):
            decode_message(TOPICS, topic, undecodable)
    assert service.engine.alerts()[0].state == "open"
    await service.on_ack(ack_message(topic, b'{"by": "farmer"}'))
    [alert] = service.engine.alerts()
    assert (alert.state, alert.acknowledged_by) == ("acknowledged", "farmer")
    assert (await service.store.call(service.store.store.steps, "farm-001"))[0].channel == "mqtt"


async def test_rest_lists_and_acknowledges_alerts_by_role_and_owner(rig: Rig, data_dir: Path) -> None:
    rig.channel("farmer", "/farmer")
    service = await rig.start()
    await rig.feed(meta("farm-001"), alarms("farm-001", T0, 3), meta("farm-009", owner="owner-b"),
                   alarms("farm-009", T0, 1))
    await rig.at(30)
    tokens = {name: rig.identities.add_api_token(name) for name in ("farmer", "watcher", "neighbour", "boss")}
    storage = SqliteStorage(data_dir / "discovery.db")
    registry = Registry(storage.database("discovery.db", REGISTRY_SCHEMA))
    audit = CommandAudit(storage.database("commands.db", AUDIT_SCHEMA), TOPICS, rig.clock)
    history = HistoryRecorder(storage.history(), TOPICS, rig.clock)
    app = create_api(registry, audit, API_TOKEN, dict, history, rig.identities)
    add_alert_routes(app, service)
    client = TestClient(TestServer(app, port=free_port()))
    await client.start_server()
    try:
        def auth(token: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {token}"}

        response = await client.get("/api/alerts", headers=auth(tokens["farmer"]))
        [alert] = (await response.json())["alerts"]
        assert (alert["farm_id"], alert["kind"], alert["severity"], alert["state"]) == (
            "farm-001", "alarm", "critical", "open")
        assert set(alert) >= {"id", "opened", "message"} and "cleared" not in alert
        response = await client.get("/api/alerts?state=all", headers=auth(API_TOKEN))
        assert len((await response.json())["alerts"]) == 2
        assert (await client.get("/api/alerts?state=some", headers=auth(API_TOKEN))).status == 400
        assert (await client.get("/api/alerts?farm=Bad!", headers=auth(API_TOKEN))).status == 400
        assert (await client.get("/api/alerts")).status == 401

        ack = f"/api/alerts/{alert['id']}/ack"
        assert (await client.post(ack, headers=auth(tokens["watcher"]))).status == 403  # a viewer
        assert (await client.post(ack, headers=auth(tokens["neighbour"]))).status == 404  # another owner's
        response = await client.post(ack, headers=auth(tokens["farmer"]))
        assert response.status == 200
        body = (await response.json())["alert"]
        assert (body["state"], body["acknowledged_by"]) == ("acknowledged", "farmer")
        other = next(a for a in service.engine.alerts() if a.farm_id == "farm-009")
        response = await client.post(f"/api/alerts/{other.id}/ack", headers=auth(API_TOKEN))
        assert (await response.json())["alert"]["acknowledged_by"] == "API_TOKEN"
        assert (await client.post("/api/alerts/0123abcd/ack", headers=auth(API_TOKEN))).status == 404
        assert (await client.post("/api/alerts/Not-An-Id/ack", headers=auth(API_TOKEN))).status == 400
    finally:
        await client.close()


async def test_an_owners_rule_watches_only_that_owners_farms(rig: Rig, tmp_path: Path) -> None:
    rig.channel("boss", "/boss", language="en")
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules: [{name: hot_a, value: temp_inside, above: 30, owner: owner-a, severity: critical}]\n",
                     encoding="utf-8")
    rig.book = load_rules(rules)
    await rig.start()
    for farm, owner in (("farm-001", "owner-a"), ("farm-009", "owner-b")):
        await rig.feed(meta(farm, owner=owner), message(TOPICS.state(farm), Reading(
            ts=T0, seq=1, values={"temp_inside": 35.0})))
    await rig.at(30)
    [body] = rig.bodies("/boss")
    assert "farm-001" in body and "farm-009" not in body


def test_old_steps_and_cleared_alerts_are_pruned_and_the_told_stay_for_the_rest(storage: Storage) -> None:
    store = AlertStore(storage.database(FILE, SCHEMA))
    store.open()
    try:
        store.record([Step(T0, "farm-001", ("a1",), "opened", "farmer", "json://x", True),
                      Step(T0 + timedelta(days=100), "farm-001", ("a2",), "opened", "farmer", "json://x", True),
                      Step(T0 + timedelta(days=100), "farm-001", ("a2",), "deferred", "boss", "json://y", None)])
        assert store.told(["a1"]) == {"farmer"} and store.told(["a2"]) == {"farmer"}  # deferred is not told
        assert store.prune(T0 + timedelta(days=50)) >= 1
        assert [s.alert_ids for s in store.steps()] == [("a2",), ("a2",)]
    finally:
        store.close()


async def test_a_node_without_the_lease_keeps_the_alerts_but_tells_no_one_until_it_takes_it(rig: Rig) -> None:
    rig.channel("farmer", "/farmer")
    service = await rig.start()
    held = False
    service.may_notify = lambda: held  # another node holds the lease on the notifications
    await rig.feed(meta("farm-001"), alarms("farm-001", T0, 3))
    await rig.at(30)
    assert rig.bodies("/farmer") == []  # the other node told the farmer
    assert [a.message for a in rig.published[TOPICS.alerts("farm-001")].alerts] == ["Controller alarm: alarm bit 3"]
    # the other node told it at 30 s: its write reaches the shared store (what it is on PostgreSQL)
    [alert] = service.engine.alerts()
    assert alert.notified is None  # this node told no one, so it does not say it did
    other_node = rig.store()
    other_node.open()
    other_node.save_alerts([replace(alert, notified=T0 + timedelta(seconds=30))])
    other_node.close()
    held = True  # that node died: this one took the lease over, and goes on with the reminder
    await rig.at(629)
    assert rig.bodies("/farmer") == []
    await rig.at(630)
    [reminder] = rig.bodies("/farmer")
    assert "ВСЁ ЕЩЁ НЕ ПОДТВЕРЖДЕНА" in reminder


def test_an_alerts_db_of_an_earlier_version_keeps_the_farms_it_heard_of(data_dir: Path) -> None:
    import sqlite3

    earlier = sqlite3.connect(data_dir / "alerts.db")
    earlier.execute("CREATE TABLE farms (farm_id TEXT PRIMARY KEY, name TEXT, owner TEXT, last_heard TEXT)")
    earlier.execute("INSERT INTO farms VALUES ('farm-001', 'Птичник №1', 'owner-a', '2026-12-01T12:00:00.000Z')")
    earlier.commit()
    earlier.close()
    store = AlertStore(SqliteStorage(data_dir / "discovery.db").database(FILE, SCHEMA))
    store.open()
    try:
        assert [(f.farm_id, f.name, f.owner, f.last_heard) for f in store.farms()] == [
            ("farm-001", "Птичник №1", "owner-a", T0)]
    finally:
        store.close()
