"""A site: one agent, three controllers on one bus (units 1, 2, 3 of one simulator), over TCP and over a real
serial pair, each house with its own identity on the embedded broker and on Mosquitto."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
import yaml

from common.identities import Credentials, Role
from common.settings import ConfigError, load_settings
from contract.payloads import format_ts, utc_now
from farm_agent.link import ModbusUrl
from farm_agent.settings import AgentSettings
from tests.brokers import Bus, bus_on_each_broker, embedded_bus  # noqa: F401 - fixture
from tests.conftest import RunningBroker
from tests.farm_system import http_json
from tests.ha_schema import check_device_config, check_entity_config
from tests.helpers import MqttWatcher, ServiceProcess, free_port, wait_until

HOUSES = (("house-1", "Птичник №1", 1), ("house-2", "Птичник №2", 2), ("house-3", "Птичник №3", 3))
SITE = "Агрофирма Север"
POLL_INTERVAL = 1.0


@dataclass
class SiteRig:
    bus: Bus
    simulator: ServiceProcess
    control_port: int
    agent: ServiceProcess
    watcher: MqttWatcher
    api_port: int

    def topic(self, house: str, leaf: str) -> str:
        return f"kub/farms/{house}/{leaf}"

    def last(self, house: str, leaf: str) -> Any:
        return self.watcher.last(self.topic(house, leaf))

    def control(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return http_json(f"http://127.0.0.1:{self.control_port}{path}", body)


def start_site(tmp_path: Path, bus: Bus, modbus_url: str, simulator_args: list[str]) -> SiteRig:
    control_port = free_port()
    simulator = ServiceProcess(["simulate", "--units", "1,2,3", "--control-port", str(control_port), "--seed", "5",
                                *simulator_args], tmp_path / "simulator.log")
    wait_until(lambda: "listening on" in simulator.output(), 15, what="the simulated bus")
    identities = {house: bus.add(house, Role.FARM, owner="agro-1") for house, _, _ in HOUSES}
    config = {
        "farm": {"owner_id": "agro-1", "site": SITE},
        "modbus": {"url": modbus_url, "poll_interval": POLL_INTERVAL, "max_interval": 0},
        "controllers": [{"id": house, "name": name, "unit": unit, "mqtt_password": identities[house].password}
                        for house, name, unit in HOUSES],
        "mqtt": {"url": f"mqtt://127.0.0.1:{bus.port}", "keepalive": 5},
        "discovery": {"heartbeat_interval": 1},
    }
    config_file = tmp_path / "farm_config.yaml"
    config_file.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    watcher = MqttWatcher(bus.port, bus.admin.username, bus.admin.password, "kub/farms/#")
    wait_until(watcher.subscribed.is_set, 10, what="the watcher subscribed")
    api_port = free_port()
    agent = ServiceProcess(["farm-agent", "--config", str(config_file), "--data-dir", str(tmp_path / "agent"),
                            "--host", "127.0.0.1", "--port", str(api_port)],
                           tmp_path / "agent.log").wait_port(api_port)
    return SiteRig(bus, simulator, control_port, agent, watcher, api_port)


def stop_site(rig: SiteRig) -> None:
    rig.watcher.close()
    rig.agent.stop()
    rig.simulator.stop()


def send_command(bus: Bus, credentials: Credentials, house: str, name: str, value: float) -> str:
    command_id = uuid.uuid4().hex
    client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    client.username_pw_set(credentials.username, credentials.password)
    client.connect("127.0.0.1", bus.port)
    client.loop_start()
    body = {"id": command_id, "value": value, "ts": format_ts(utc_now())}
    client.publish(f"kub/farms/{house}/set/{name}", json.dumps(body), qos=1).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()
    return command_id


def check_every_house_reports(rig: SiteRig) -> None:
    for house, name, unit in HOUSES:
        meta = wait_until(lambda h=house: (m := rig.last(h, "meta")) and m["device"].get("firmware") and m, 20,
                          what=f"{house}'s meta with its firmware")
        assert (meta["name"], meta["site"], meta["owner_id"]) == (name, SITE, "agro-1")
        assert meta["device"]["unit"] == unit
        wait_until(lambda h=house: (rig.last(h, "status") or {}).get("state") == "online", 10,
                   what=f"{house} online")
        state = wait_until(lambda h=house: rig.last(h, "state"), 10, what=f"{house}'s state")
        assert isinstance(state["values"]["temp_inside"], float)
        # one block read per unit: 8 + 177 bytes and two silent intervals at 9600 8N1 is 0.2 s on the line (a pty
        # or loopback does not pace bytes, so the cycle's wall time may be shorter); the first cycle also reads
        # each unit's time zone setting back (and so does one a minute), so a later one is the plain cycle
        heartbeat = wait_until(lambda h=house: (b := rig.last(h, "heartbeat")) and b.get("bus_units")
                               and b["cycle_wire_s"] < 3 * 0.2 + 0.1 and b, 10,
                               what=f"{house}'s heartbeat with a plain bus cycle")
        assert heartbeat["modbus"] == "ok" and heartbeat["bus_units"] == 3 and heartbeat["overrun"] is False
        assert heartbeat["cycle_wire_s"] >= round(3 * 0.2, 3)  # published to the millisecond
    # each house reads its own unit: the simulated units start on different days of the cycle
    days = {rig.last(house, "state")["values"]["day_counter"] for house, _, _ in HOUSES}
    assert len(days) == 3


def check_home_assistant_sees_the_site(rig: SiteRig) -> None:
    """Each house its own device, reached through the site's device, which the first house announces."""
    ha = MqttWatcher(rig.bus.port, rig.bus.admin.username, rig.bus.admin.password, "homeassistant/#")
    try:
        site_topic = "homeassistant/sensor/kubmesh-house-1/site_poll_cycle/config"
        wait_until(lambda: ha.last(site_topic) and all(ha.last(f"homeassistant/device/kubmesh-{h}/config")
                                                       for h, _, _ in HOUSES), 15, what="the site's HA configs")
        site = check_entity_config(ha.last(site_topic))
        assert site["device"]["ids"] == ["kubmesh-site-house-1"] and site["device"]["name"] == SITE
        for house, name, _ in HOUSES:
            config = ha.last(f"homeassistant/device/kubmesh-{house}/config")
            check_device_config(config)
            assert config["dev"]["via_device"] == "kubmesh-site-house-1" and config["dev"]["name"] == name
    finally:
        ha.close()


def check_a_command_reaches_only_its_unit(rig: SiteRig) -> None:
    operator = rig.bus.add("operator-1", Role.OPERATOR)
    command_id = send_command(rig.bus, operator, "house-2", "timezone_minutes", 240)
    ack = wait_until(lambda: next((a for a in rig.watcher.payloads(rig.topic("house-2", "ack"))
                                   if a["id"] == command_id), None), 15, what="house-2's ack")
    assert ack["ok"] is True, ack
    writes = {unit: rig.control(f"/stats?unit={unit}")["writes"] for _, _, unit in HOUSES}
    assert [w["address"] for w in writes[2]] == [0x003F] and writes[2][0]["value"] == 240
    assert writes[1] == [] and writes[3] == []
    for other in ("house-1", "house-3"):
        assert rig.watcher.payloads(rig.topic(other, "ack")) == []


def check_a_dead_unit_delays_no_other(rig: SiteRig) -> None:
    rig.control("/fail", {"mode": "timeout", "function": 4, "unit": 2})
    wait_until(lambda: (b := rig.last("house-2", "heartbeat")) and b["modbus"] == "error", 15,
               what="house-2 saying modbus: error")
    assert rig.last("house-2", "status")["state"] == "online"
    seq_before = {h: rig.last(h, "state")["seq"] for h in ("house-1", "house-3")}
    polls_before = rig.last("house-2", "heartbeat")["polls_failed"]
    wait_until(lambda: rig.last("house-2", "heartbeat")["polls_failed"] >= polls_before + 3, 20,
               what="three more failed polls of unit 2")
    for house in ("house-1", "house-3"):
        heartbeat = rig.last(house, "heartbeat")
        assert heartbeat["modbus"] == "ok"
        # the cycle pays unit 2's timeout once and still fits the poll interval
        assert heartbeat["overrun"] is False and heartbeat["cycle_s"] < POLL_INTERVAL
        assert rig.last(house, "state")["seq"] >= seq_before[house] + 3
    rig.control("/fail", {"mode": None, "unit": 2})
    wait_until(lambda: rig.last("house-2", "heartbeat")["modbus"] == "ok", 15, what="unit 2 answering again")


def check_a_killed_agent_takes_every_house_offline(rig: SiteRig) -> None:
    rig.agent.kill()
    for house, _, _ in HOUSES:
        status = wait_until(lambda h=house: (s := rig.last(h, "status")) and s["state"] == "offline" and s, 30,
                            what=f"{house}'s last will")
        assert status["reason"] == "connection lost"
    # retained: a newcomer reads every house offline
    late = MqttWatcher(rig.bus.port, rig.bus.admin.username, rig.bus.admin.password, "kub/farms/+/status")
    try:
        wait_until(lambda: all((s := late.last(f"kub/farms/{h}/status")) and s["state"] == "offline"
                               for h, _, _ in HOUSES), 10, what="every house retained offline")
    finally:
        late.close()


def test_a_site_over_tcp_on_both_brokers(bus: Bus, tmp_path: Path) -> None:
    port = free_port()
    rig = start_site(tmp_path, bus, f"tcp://127.0.0.1:{port}?timeout=0.3", ["--port", str(port)])
    try:
        check_every_house_reports(rig)
        health = http_json(f"http://127.0.0.1:{rig.api_port}/health")
        assert health["site"] == SITE and [h["farm_id"] for h in health["houses"]] == [h for h, _, _ in HOUSES]
        check_home_assistant_sees_the_site(rig)
        check_a_command_reaches_only_its_unit(rig)
        check_a_dead_unit_delays_no_other(rig)
        check_a_killed_agent_takes_every_house_offline(rig)
    finally:
        stop_site(rig)


def test_a_site_over_a_serial_pair(broker: RunningBroker, tmp_path: Path, serial_pair: tuple[Path, Path]) -> None:
    device_end, agent_end = serial_pair
    rig = start_site(tmp_path, embedded_bus(broker),
                     f"rtu://{agent_end}?baudrate=9600&parity=N&stopbits=1&timeout=0.3",
                     ["--serial", str(device_end), "--baudrate", "9600"])
    try:
        check_every_house_reports(rig)
        check_a_command_reaches_only_its_unit(rig)
        check_a_dead_unit_delays_no_other(rig)
        check_a_killed_agent_takes_every_house_offline(rig)
    finally:
        stop_site(rig)


def test_the_issues_site_configuration_gives_each_house_its_settings(tmp_path: Path) -> None:
    config = tmp_path / "farm_config.yaml"
    config.write_text("""
farm: {owner_id: agro-1, site: "Агрофирма Север"}
modbus: {url: "rtu:///dev/ttyUSB0?baudrate=9600&parity=N&stopbits=1"}
mqtt: {url: "mqtt://broker.example:1883"}
controllers:
  - {id: house-1, name: "Птичник №1", unit: 1, mqtt_password: secret-1}
  - {id: house-2, name: "Птичник №2", unit: 2}
  - {id: house-3, name: "Птичник №3", unit: 3, url: "tcp://192.168.1.52:502"}
""", encoding="utf-8")
    settings = load_settings(AgentSettings, config_file=config, env={})
    houses = settings.houses()
    assert [(h.farm_id, h.farm_name, h.site, h.owner_id) for h in houses] == [
        ("house-1", "Птичник №1", SITE, "agro-1"), ("house-2", "Птичник №2", SITE, "agro-1"),
        ("house-3", "Птичник №3", SITE, "agro-1")]
    urls = [ModbusUrl.parse(h.modbus_url) for h in houses]
    assert [(u.kind, u.target, u.unit) for u in urls] == [
        ("rtu", "/dev/ttyUSB0", 1), ("rtu", "/dev/ttyUSB0", 2), ("tcp", "192.168.1.52", 3)]
    assert urls[0].link == urls[1].link != urls[2].link  # houses 1 and 2 share one bus
    assert (houses[0].mqtt().username, houses[0].mqtt().password) == ("house-1", "secret-1")
    assert houses[1].mqtt().username is None  # no password of its own: the site's URL as it is


def test_single_controller_settings_are_a_site_of_one() -> None:
    settings = load_settings(AgentSettings, env={"FARM_ID": "farm-001", "MODBUS_URL": "tcp://127.0.0.1:5020?unit=4"})
    (house,) = settings.houses()
    assert house.house_id == "farm-001" and house.farm_name == "farm-001"
    assert ModbusUrl.parse(house.modbus_url).unit == 4


@pytest.mark.parametrize(("yaml_text", "message"), [
    ("farm: {id: farm-001}\ncontrollers: [{id: house-1, unit: 1}]", "either farm.id"),
    ("controllers: [{id: house-1, unit: 1}, {id: house-1, unit: 2}]", "its own id"),
    ("controllers: [{id: house-1, unit: 1}, {id: house-2, unit: 1}]", "same unit 1 on the same link"),
    ("controllers: [{id: house-1, unit: 0}]", "greater than or equal to 1"),
    ("controllers: [{id: house-1, unit: 1, url: 'ftp://x'}]", "tcp:// or rtu://"),
    ("controllers: [{id: house-1, unit: 1, colour: red}]", "Extra inputs"),
    ("modbus: {url: 'tcp://127.0.0.1:502'}", "farm.id (FARM_ID), or a list of controllers"),
    ("sms: {device: /dev/ttyUSB1, numbers: ['+79001234567']}\ncontrollers: [{id: h-1, unit: 1}, {id: h-2, unit: 2}]",
     "cannot share the modem"),
])
def test_a_bad_site_configuration_names_its_fault(tmp_path: Path, yaml_text: str, message: str) -> None:
    config = tmp_path / "farm_config.yaml"
    config.write_text(yaml_text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(AgentSettings, config_file=config, env={})
