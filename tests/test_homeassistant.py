"""Home Assistant discovery configs generated from the profile, checked against HA's rules (tests/ha_schema.py),
and the real thing: an agent process announcing its farm to a paho subscriber on ``homeassistant/#``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jinja2
import paho.mqtt.client as paho
import pytest

from common.identities import IdentityStore, Role
from contract.topics import Topics
from farm_agent.homeassistant import config_topic, device_config
from farm_agent.profile import load_profile
from tests.conftest import RunningBroker
from tests.farm_system import Agent, Simulator
from tests.ha_schema import check_device_config
from tests.helpers import REPO, MqttWatcher, free_port, wait_until

PROFILE = load_profile()
FARM = "farm-001"
CORE_SENSORS = {"temperature", "humidity", "carbon_dioxide", "pressure"}


def config(farm_id: str = FARM, language: str = "en") -> dict[str, Any]:
    return device_config(PROFILE, Topics(), farm_id, farm_name="Птичник №1", firmware="4.01", location="house 1",
                         agent_version="1.0", language=language)


@pytest.mark.parametrize("language", ["en", "ru"])
def test_device_config_follows_home_assistants_rules(language: str) -> None:
    document = config(language=language)
    components = check_device_config(document)
    assert config_topic("homeassistant", FARM) == "homeassistant/device/kubmesh-farm-001/config"
    assert document["dev"] == {"ids": ["kubmesh-farm-001"], "name": "Птичник №1", "mdl": "KUB-1063", "mf": "KUB",
                               "sw": "4.01", "sa": "house 1"}
    assert document["o"]["name"] == "kubmesh"
    assert document["avty"] == [{"t": "kub/farms/farm-001/status", "val_tpl": "{{ value_json.state }}"}]
    writable = {w.name: w.kind for w in PROFILE.writable}
    for name, kind in writable.items():
        assert components[name]["platform"] == ("button" if kind == "action" else "number"), name
        assert components[name]["command_topic"] == f"kub/farms/{FARM}/set/{name}"
    for name in ("modbus_link", "backlog", "last_poll"):
        assert components[name]["entity_category"] == "diagnostic", name


def test_core_sensors_commands_and_alarms_are_there() -> None:
    components = config()["cmps"]
    for name, device_class in [("temp_inside", "temperature"), ("humidity", "humidity"),
                               ("co2", "carbon_dioxide"), ("pressure", "pressure")]:
        assert components[name]["dev_cla"] == device_class and components[name]["stat_cla"] == "measurement"
    assert "dev_cla" not in components["nh3"] and components["nh3"]["unit_of_meas"] == "ppm"
    assert "dev_cla" not in components["ventilation_level"] and components["ventilation_level"]["unit_of_meas"] == "%"
    assert components["reset_alarms"] == {
        "p": "button", "uniq_id": "kubmesh-farm-001-reset_alarms", "name": "Reset latched alarms",
        "cmd_t": "kub/farms/farm-001/set/reset_alarms", "pl_prs": "1",
    }
    assert components["timezone_minutes"]["p"] == "number"
    assert components["alarm_active"]["dev_cla"] == "problem"


def test_the_schema_check_catches_what_home_assistant_would_refuse() -> None:
    for breaks in (
        lambda d: d["cmps"]["temp_inside"].update(unit_of_meas="ppm"),  # wrong unit for the class
        lambda d: d["cmps"]["humidity"].update(stat_cla="average"),
        lambda d: d["cmps"]["co2"].update(colour="red"),  # not a key HA knows
        lambda d: d["cmps"]["co2"].pop("uniq_id"),
        lambda d: d["cmps"]["reset_alarms"].pop("cmd_t"),
        lambda d: d["cmps"]["backlog"].update(ent_cat="config"),
        lambda d: d["cmps"]["last_poll"].update(stat_cla="measurement"),
        lambda d: d["avty"][0].pop("val_tpl"),
        lambda d: d["o"].pop("name"),
        lambda d: d["cmps"]["timezone_minutes"].update(min=900),
        lambda d: d["cmps"]["humidity"].update(uniq_id=d["cmps"]["co2"]["uniq_id"]),
    ):
        document = config()
        breaks(document)
        with pytest.raises(AssertionError):
            check_device_config(document)


def test_unique_ids_are_stable_and_per_farm() -> None:
    assert config()["cmps"] == config()["cmps"]
    first = {c["uniq_id"] for c in config("farm-001")["cmps"].values()}
    second = {c["uniq_id"] for c in config("farm-002")["cmps"].values()}
    assert not first & second


def test_templates_render_values_and_make_null_unknown() -> None:
    components = config()["cmps"]
    render = lambda name, data: jinja2.Template(components[name]["val_tpl"]).render(value_json=data)  # noqa: E731
    assert render("temp_inside", {"values": {"temp_inside": -20.0}}) == "-20.0"
    assert render("humidity", {"values": {"humidity": None}}) == "None"  # HA's sign for "unknown"
    assert render("ventilation_scheme", {"values": {"ventilation_scheme": 1}}) == "tunnel"
    assert render("alarm_active", {"active": [{"bit": 1}]}) == "ON"
    assert render("alarm_active", {"active": []}) == "OFF"
    availability = jinja2.Template(config()["avty"][0]["val_tpl"])
    assert availability.render(value_json={"state": "online", "ts": "x"}) == "online"


# ---- the real thing: an agent process announcing its farm ---------------------------------------------------

def ha_configs(watcher: MqttWatcher, retained_only: bool = False) -> list[dict[str, Any]]:
    topic = config_topic("homeassistant", FARM)
    with watcher.lock:
        found = [p for t, p, r in watcher.messages if t == topic and (r or not retained_only)]
    return [json.loads(p) for p in found if p]


def test_an_agent_announces_its_farm_to_home_assistant_again_on_its_birth_and_clears_it_on_removal(
    broker: RunningBroker, simulator: Simulator, tmp_path: Path
) -> None:
    credentials = broker.add(FARM, Role.FARM, owner="ivan")
    home_assistant = broker.add("homeassistant", Role.OPERATOR)
    agent = Agent(tmp_path, broker.data_dir, FARM, broker.url(credentials), simulator.modbus_url).start()
    watcher = MqttWatcher(broker.port, home_assistant.username, home_assistant.password, "homeassistant/#")
    try:
        document = wait_until(lambda: ha_configs(watcher)[-1], 15, what="the device config")
        components = check_device_config(document)
        core = [c for c in components.values() if c["platform"] == "sensor" and c.get("device_class") in CORE_SENSORS]
        commands = [c for c in components.values() if c["platform"] in ("button", "number")]
        assert len(core) >= 5 and len(commands) >= 1
        newcomer = MqttWatcher(broker.port, home_assistant.username, home_assistant.password, "homeassistant/#")
        try:
            assert wait_until(lambda: ha_configs(newcomer, retained_only=True), 5, what="a retained config")
        finally:
            newcomer.close()

        # Home Assistant restarts: its birth message brings the config again
        before = len(ha_configs(watcher))
        birth = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
        birth.username_pw_set(broker.admin.username, broker.admin.password)
        birth.connect("127.0.0.1", broker.port)
        birth.loop_start()
        birth.publish("homeassistant/status", b"online", qos=1).wait_for_publish(5)
        birth.disconnect()
        birth.loop_stop()
        again = wait_until(lambda: ha_configs(watcher)[before:], 10, what="the config after HA's birth message")
        assert again[0] == document

        # unique ids survive an agent restart
        agent.stop()
        count = len(ha_configs(watcher))
        agent = Agent(tmp_path, broker.data_dir, FARM, broker.url(credentials), simulator.modbus_url).start()
        restarted = wait_until(lambda: ha_configs(watcher)[count:], 15, what="the config after a restart")[0]
        assert {c["uniq_id"] for c in restarted["cmps"].values()} == {c["uniq_id"] for c in document["cmps"].values()}
        agent.stop()

        removed = subprocess.run(
            [sys.executable, "-m", "kubmesh", "farm", "remove", FARM, "--data-dir", str(broker.data_dir),
             "--mqtt-url", f"mqtt://127.0.0.1:{broker.port}"], capture_output=True, text=True, timeout=30, cwd=REPO)
        assert removed.returncode == 0, removed.stderr
        assert "cleared" in removed.stdout and broker.store.get(FARM) is None
        topic = config_topic("homeassistant", FARM)
        wait_until(lambda: watcher.payloads(topic)[-1] == "", 10, what="the empty retained config")
    finally:
        watcher.close()
        agent.stop()
    late = MqttWatcher(broker.port, broker.admin.username, broker.admin.password, "homeassistant/#")
    try:
        wait_until(lambda: late.subscribed.is_set(), 5, what="subscribed")
        late.client.publish("homeassistant/probe", b"x", qos=1).wait_for_publish(5)
        wait_until(lambda: late.payloads("homeassistant/probe"), 5, what="the probe")
        assert not late.payloads(topic), "no retained config is left for a new Home Assistant"
    finally:
        late.close()


def test_farm_remove_without_a_broker_says_so_and_still_removes_the_farm(data_dir: Path) -> None:
    IdentityStore(data_dir).add(FARM, Role.FARM, owner="ivan")
    command = [sys.executable, "-m", "kubmesh", "farm", "remove", FARM, "--data-dir", str(data_dir),
               "--mqtt-url", f"mqtt://127.0.0.1:{free_port()}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30, cwd=REPO)
    assert result.returncode == 0 and "could not clear the farm's retained topics" in result.stderr
    assert IdentityStore(data_dir).get(FARM) is None and "Traceback" not in result.stderr
    again = subprocess.run(command, capture_output=True, text=True, timeout=30, cwd=REPO)
    assert again.returncode == 1 and f"no farm '{FARM}'" in again.stderr
