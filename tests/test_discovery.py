"""``kubmesh discovery`` as a real process: presence from real MQTT messages, the REST API over HTTP."""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

from common.identities import Credentials, IdentityStore, Role
from contract.payloads import Ack, DeviceInfo, Meta, ProfileSummary, Reading, Status, encode, utc_now
from tests.conftest import RunningBroker
from tests.helpers import MqttWatcher, ServiceProcess, free_port, wait_until

TOKEN = "test-token-123"
FARM = "farm-100"


@dataclass
class Discovery:
    process: ServiceProcess
    api_port: int
    mqtt_port: int
    store: IdentityStore

    def get(self, path: str, token: str | None = TOKEN) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        request = urllib.request.Request(f"http://127.0.0.1:{self.api_port}{path}", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)


def start_discovery(tmp_path: Path, data_dir: Path, env: dict[str, str] | None = None,
                    mqtt_port: int | None = None) -> Discovery:
    api_port, mqtt_port = free_port(), mqtt_port or free_port()
    process = ServiceProcess(
        ["discovery", "--data-dir", str(data_dir), "--mqtt-host", "127.0.0.1", "--mqtt-port", str(mqtt_port),
         "--host", "127.0.0.1", "--port", str(api_port)],
        tmp_path / f"discovery-{api_port}.log",
        env={"API_TOKEN": TOKEN, **(env or {})},
    ).wait_port(api_port)
    return Discovery(process, api_port, mqtt_port, IdentityStore(data_dir))


@pytest.fixture
def discovery(tmp_path: Path, data_dir: Path) -> Iterator[Discovery]:
    node = start_discovery(tmp_path, data_dir)
    wait_until(lambda: node.get("/health")[1]["broker"] == "connected", 10, what="discovery connected")
    yield node
    node.process.stop()


def farm_client(port: int, credentials: Credentials, will: bool = False) -> paho.Client:
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    client.username_pw_set(credentials.username, credentials.password)
    if will:
        client.will_set(f"kub/farms/{FARM}/status", encode(Status(state="offline", ts=utc_now())), 1, True)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def publish(client: paho.Client, kind: str, payload: bytes, retain: bool = True) -> None:
    client.publish(f"kub/farms/{FARM}/{kind}", payload, qos=1, retain=retain).wait_for_publish(5)


def meta() -> bytes:
    return encode(Meta(
        farm_id=FARM, name="Птичник", owner_id="owner-a", device=DeviceInfo(model="KUB-1063", firmware="4.01"),
        agent_version="test", poll_interval_s=5, profile=ProfileSummary(name="KUB-1063", values=["temp_inside"]),
        ts=utc_now(),
    ))


def test_farm_presence_and_state_are_served(discovery: Discovery) -> None:
    client = farm_client(discovery.mqtt_port, discovery.store.add(FARM, Role.FARM, owner="owner-a"))
    try:
        publish(client, "status", encode(Status(state="online", ts=utc_now())))
        publish(client, "meta", meta())
        publish(client, "state", encode(Reading(ts=utc_now(), seq=7, values={"temp_inside": -20.0, "humidity": None},
                                                status={"temp_inside": "ok", "humidity": "break"})))
        farm = wait_until(lambda: (f := discovery.get(f"/api/farms/{FARM}")[1]).get("state") and f, 10, what="state")
        assert farm["online"] is True and farm["name"] == "Птичник" and farm["owner_id"] == "owner-a"
        assert farm["state"]["values"] == {"temp_inside": -20.0, "humidity": None}
        assert farm["meta"]["device"]["firmware"] == "4.01"
        status, listing = discovery.get("/api/farms?owner=owner-a")
        assert status == 200 and [f["farm_id"] for f in listing["farms"]] == [FARM]
        assert discovery.get("/api/farms?owner=someone-else")[1] == {"farms": []}
    finally:
        client.loop_stop()


def test_a_farm_that_dies_shows_offline_by_its_will(discovery: Discovery) -> None:
    client = farm_client(discovery.mqtt_port, discovery.store.add(FARM, Role.FARM), will=True)
    publish(client, "status", encode(Status(state="online", ts=utc_now())))
    wait_until(lambda: discovery.get(f"/api/farms/{FARM}")[1].get("online"), 10, what="online")
    client._sock.close()  # the connection drops without DISCONNECT: the broker sends the will
    client.loop_stop()
    wait_until(lambda: discovery.get(f"/api/farms/{FARM}")[1]["online"] is False, 10, what="offline")


def test_api_refuses_missing_and_bad_tokens_and_answers_json_errors(discovery: Discovery) -> None:
    for token in (None, "wrong", ""):
        status, body = discovery.get("/api/farms", token=token)
        assert status == 401 and body["error"] == "unauthorized"
    assert discovery.get("/api/farms/unknown-farm") == (404, {"error": "farm not found", "detail": "unknown-farm"})
    status, body = discovery.get("/api/farms/Bad..Id")
    assert status == 400 and body["error"] == "invalid farm id"
    assert discovery.get("/api/nothing-here")[0] == 404
    status, health = discovery.get("/health", token=None)
    assert status == 200 and health["status"] == "ok" and health["database"] == "ok"


def test_malformed_payloads_are_dropped_and_the_service_goes_on(discovery: Discovery) -> None:
    client = farm_client(discovery.mqtt_port, discovery.store.add(FARM, Role.FARM))
    try:
        for payload in (b"{not json", b'{"state": "sideways"}', b"\xff\xfe", b"[]", b'{"ts": 5}'):
            publish(client, "status", payload)
            publish(client, "state", payload)
        publish(client, "status", encode(Status(state="online", ts=utc_now())))
        wait_until(lambda: discovery.get(f"/api/farms/{FARM}")[1].get("online"), 10, what="a good message counts")
        assert discovery.get(f"/api/farms/{FARM}")[1]["state"] is None
        assert "dropped a status message" in discovery.process.output()
    finally:
        client.loop_stop()


def test_discovery_status_is_retained_and_says_offline_after_sigterm(tmp_path: Path, data_dir: Path) -> None:
    node = start_discovery(tmp_path, data_dir)
    viewer = node.store.add("viewer", Role.VIEWER)
    watcher = MqttWatcher(node.mqtt_port, viewer.username, viewer.password, "kub/discovery/status")
    try:
        wait_until(lambda: watcher.last("kub/discovery/status") == "online", 10, what="online")
        node.process.proc.send_signal(signal.SIGTERM)
        assert node.process.proc.wait(10) == 0
        assert watcher.last("kub/discovery/status") == "offline"
    finally:
        watcher.close()
        node.process.stop()


def test_discovery_uses_an_external_broker_when_mqtt_url_is_set(
    broker: RunningBroker, tmp_path: Path, data_dir: Path
) -> None:
    service = broker.add("discovery", Role.DISCOVERY)
    node = start_discovery(tmp_path, tmp_path / "own-data", env={"MQTT_URL": broker.url(service)},
                           mqtt_port=broker.port)
    try:
        wait_until(lambda: node.get("/health")[1]["broker"] == "connected", 10, what="connected")
        assert node.get("/health")[1]["embedded_broker"] is False
        client = farm_client(broker.port, broker.add(FARM, Role.FARM))
        publish(client, "status", encode(Status(state="online", ts=utc_now())))
        wait_until(lambda: node.get(f"/api/farms/{FARM}")[1].get("online"), 10, what="farm via external broker")
        client.loop_stop()
    finally:
        node.process.stop()


def test_commands_and_their_acks_make_the_audit_trail(discovery: Discovery) -> None:
    farm_credentials = discovery.store.add(FARM, Role.FARM)
    operator = discovery.store.add("olga", Role.OPERATOR)
    farm = farm_client(discovery.mqtt_port, farm_credentials)
    commander = farm_client(discovery.mqtt_port, operator)
    try:
        publish(farm, "status", encode(Status(state="online", ts=utc_now())))
        wait_until(lambda: discovery.get(f"/api/farms/{FARM}")[0] == 200, 10, what="farm known")
        publish(commander, "set/reset_alarms", b'{"value": 1, "id": "c-1"}', retain=False)
        publish(farm, "ack", encode(Ack(id="c-1", name="reset_alarms", value=1, ok=True, ts=utc_now())), retain=False)
        publish(commander, "set/timezone_minutes", b'{"value": 9999, "id": "c-2"}', retain=False)
        publish(farm, "ack", encode(Ack(id="c-2", name="timezone_minutes", value=9999, ok=False,
                                        error="out of range", ts=utc_now())), retain=False)
        trail = wait_until(
            lambda: (c := discovery.get(f"/api/farms/{FARM}/commands")[1]["commands"]) and len(c) == 2
            and all(x["acknowledged"] for x in c) and c, 10, what="two acknowledged commands")
        by_id = {c["id"]: c for c in trail}
        assert by_id["c-1"]["ok"] is True and by_id["c-1"]["sent"] and by_id["c-1"]["value"] == 1
        assert by_id["c-2"]["ok"] is False and by_id["c-2"]["error"] == "out of range"
        assert discovery.get("/api/farms/unknown/commands")[0] == 404
        assert discovery.get(f"/api/farms/{FARM}/commands?limit=abc")[0] == 400
        assert discovery.get(f"/api/farms/{FARM}/commands", token=None)[0] == 401
    finally:
        farm.loop_stop()
        commander.loop_stop()
