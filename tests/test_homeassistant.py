"""Home Assistant discovery configs generated from the profile, checked against HA's rules (tests/ha_schema.py),
and the real thing: an agent process announcing its farm to a paho subscriber on ``homeassistant/#``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox
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


WEB = "https://farms.example.ts.net"
# HA renders templates in an immutable sandbox: a template that updates a dict fails there, not in plain Jinja
HA_TEMPLATES = jinja2.sandbox.ImmutableSandboxedEnvironment()


def config(farm_id: str = FARM, language: str = "en", web_url: str | None = WEB) -> dict[str, Any]:
    return device_config(PROFILE, Topics(), farm_id, farm_name="Птичник №1", firmware="4.01", location="house 1",
                         agent_version="1.0", language=language, web_url=web_url)


def render(template: str, data: object) -> str:
    return HA_TEMPLATES.from_string(template).render(value_json=data)


@pytest.mark.parametrize("language", ["en", "ru"])
def test_device_config_follows_home_assistants_rules(language: str) -> None:
    document = config(language=language)
    components = check_device_config(document)
    assert config_topic("homeassistant", FARM) == "homeassistant/device/kubmesh-farm-001/config"
    assert document["dev"] == {"ids": ["kubmesh-farm-001"], "name": "Птичник №1", "mdl": "KUB-1063", "mf": "KUB",
                               "sw": "4.01", "sa": "house 1", "cu": f"{WEB}/farms/farm-001"}
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
        "p": "button", "uniq_id": "kubmesh-farm-001-reset_alarms", "def_ent_id": "button.farm_001_reset_alarms",
        "obj_id": "farm_001_reset_alarms",
        "name": "Reset latched alarms", "qos": 1, "cmd_t": "kub/farms/farm-001/set/reset_alarms", "pl_prs": "1",
        "ic": "mdi:bell-off",
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
        lambda d: d["cmps"]["humidity"].update(def_ent_id="sensor.Птичник_humidity"),
        lambda d: d["cmps"]["humidity"].update(def_ent_id="binary_sensor.farm_001_humidity"),
        lambda d: d["cmps"]["humidity"].pop("obj_id"),
        lambda d: d["cmps"]["humidity"].update(def_ent_id=d["cmps"]["co2"]["def_ent_id"]),
        lambda d: d["cmps"]["nh3"].update(ic="molecule"),
        lambda d: d["cmps"]["timezone_minutes"].pop("val_tpl"),
        lambda d: d["cmps"]["reset_alarms"].update(cmd_t="kub/farms/+/set/reset_alarms"),
        lambda d: d["cmps"]["alarm_active"].pop("json_attr_t"),
        lambda d: d["dev"].update(cu="farms.example"),
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
    value = lambda name, data: render(components[name]["val_tpl"], data)  # noqa: E731
    assert value("temp_inside", {"values": {"temp_inside": -20.0}}) == "-20.0"
    assert value("humidity", {"values": {"humidity": None}}) == "None"  # HA's sign for "unknown"
    assert value("ventilation_scheme", {"values": {"ventilation_scheme": 1}}) == "tunnel"
    assert value("alarm_active", {"active": [{"bit": 1}]}) == "ON"
    assert value("alarm_active", {"active": []}) == "OFF"
    assert render(config()["avty"][0]["val_tpl"], {"state": "online", "ts": "x"}) == "online"


def test_every_component_sets_its_own_qos_since_home_assistant_does_not_pass_the_devices_down() -> None:
    document = config()
    assert "qos" not in document, "a root qos would look like it applies, and does not"
    components = check_device_config(document)
    commands = {k: c for k, c in components.items() if "command_topic" in c}
    assert set(commands) == {"reset_alarms", "timezone_minutes"}
    assert all(c["qos"] == 1 for c in components.values())
    document["qos"] = 1  # what HA makes of a device-level qos alone: QoS 0 for every component
    for component in document["cmps"].values():
        component.pop("qos")
    assert all(c["qos"] == 0 for c in check_device_config(document).values())


def test_entity_ids_carry_the_farm_id_and_not_the_farms_name() -> None:
    for farm_id, language in (("farm-001", "ru"), ("ptichnik_2", "en")):
        components = check_device_config(config(farm_id, language))
        slug = farm_id.replace("-", "_")
        for key, component in components.items():
            assert component["default_entity_id"] == f"{component['platform']}.{slug}_{key}"
    assert check_device_config(config())["temp_inside"]["default_entity_id"] == "sensor.farm_001_temp_inside"


@pytest.mark.parametrize("language", ["en", "ru"])
def test_every_entity_name_is_in_the_configured_language(language: str) -> None:
    formulas = {"CO2", "NH3"}
    for key, component in config(language=language)["cmps"].items():
        name = component["name"]
        cyrillic = any("а" <= ch.lower() <= "я" or ch in "ёЁ" for ch in name)
        if language == "ru":
            assert cyrillic or name in formulas, f"{key}: {name!r} is not Russian"
        else:
            assert not cyrillic, f"{key}: {name!r} is not English"


def test_the_time_zone_number_shows_what_the_device_holds() -> None:
    components = check_device_config(config())
    number = components["timezone_minutes"]
    assert number["state_topic"] == "kub/farms/farm-001/state" and number["command_topic"].endswith("/timezone_minutes")
    assert render(number["value_template"], {"values": {"timezone": 180}}) == "180"
    assert render(number["value_template"], {"values": {}}) == "None"  # not read yet: unknown, not a memory
    assert "timezone" not in components, "the read-back value is the number's state, not a second entity"
    assert PROFILE.holding_registers() == [0x003F]


@pytest.mark.parametrize("language", ["en", "ru"])
def test_alarm_and_warning_entities_say_what_is_raised(language: str) -> None:
    components = check_device_config(config(language=language))
    alarms = {"ts": "2026-01-01T00:00:00.000Z",
              "active": [{"bit": 3, "label": "Fan fault", "labels": {"en": "Fan fault", "ru": "Авария вентилятора"}},
                         {"bit": 40, "label": "alarm bit 40"}],
              "warnings": [], "latched": [], "latched_warnings": [{"bit": 2, "label": "warning bit 2"}]}
    for key in ("alarm_active", "warning_active", "alarm_count", "latched_count", "latched_warning_count"):
        assert components[key]["json_attributes_topic"] == "kub/farms/farm-001/alarms", key
    attributes = lambda key: json.loads(render(components[key]["json_attributes_template"], alarms))  # noqa: E731
    if language == "ru":
        assert attributes("alarm_active") == {"alarms": ["Авария вентилятора", "авария, бит 40"], "bits": [3, 40]}
        assert attributes("latched_warning_count") == {"alarms": ["предупреждение, бит 2"], "bits": [2]}
    else:
        assert attributes("alarm_active") == {"alarms": ["Fan fault", "alarm bit 40"], "bits": [3, 40]}
    assert attributes("warning_active") == {"alarms": [], "bits": []}
    assert render(components["latched_warning_count"]["value_template"], alarms) == "1"
    assert render(components["warning_active"]["value_template"], alarms) == "OFF"


def test_a_sensor_in_break_says_so_beside_its_unknown_value() -> None:
    components = check_device_config(config(language="ru"))
    state = {"values": {"temp_inside": None, "humidity": 61.2, "co2": None},
             "status": {"temp_inside": "break", "humidity": "ok", "co2": "pending"}}
    assert render(components["temp_inside"]["value_template"], state) == "None"
    assert json.loads(render(components["temp_inside"]["json_attributes_template"], state)) == {"status": "break"}
    faults = components["sensor_faults"]
    assert faults["entity_category"] == "diagnostic"
    assert render(faults["value_template"], state) == "2"
    assert json.loads(render(faults["json_attributes_template"], state)) == {
        "Температура внутри": "обрыв датчика", "CO2": "нет данных"}


def test_icons_units_links_and_areas() -> None:
    components = check_device_config(config())
    for key in ("fan_output_base", "fan_output_tunnel", "damper_output", "ventilation_level", "nh3", "day_counter"):
        assert components[key]["icon"].startswith("mdi:"), key
    day = components["day_counter"]
    assert "state_class" not in day and "unit_of_measurement" not in day, "a day count is not a measurement"
    assert "cu" not in config(web_url=None)["dev"]
    without_area = device_config(PROFILE, Topics(), FARM, farm_name="x", firmware=None, location=None,
                                 agent_version="1.0")
    assert "sa" not in without_area["dev"]


def test_digital_outputs_and_heartbeat_counters_are_diagnostics() -> None:
    components = check_device_config(config())
    for key in ("digital_outputs_1", "digital_outputs_2", "digital_outputs_3", "digital_outputs_2_alarm_relay",
                "dropped", "polls_failed", "uptime", "backlog", "modbus_link"):
        assert components[key]["entity_category"] == "diagnostic", key
    relay = components["digital_outputs_2_alarm_relay"]
    assert relay["platform"] == "binary_sensor" and relay["name"] == "Alarm relay"
    assert render(relay["value_template"], {"values": {"digital_outputs_2": 0x0080}}) == "ON"  # bit 7
    assert render(relay["value_template"], {"values": {"digital_outputs_2": 0xFF7F}}) == "OFF"
    assert render(relay["value_template"], {"values": {"digital_outputs_2": None}}) == "None"
    assert render(relay["value_template"], {"values": {}}) == "None"
    heartbeat = {"uptime_s": 3600.4, "dropped": 2, "polls_failed": 5, "polls_ok": 1, "modbus": "ok"}
    assert components["uptime"]["state_topic"] == "kub/farms/farm-001/heartbeat"
    assert render(components["uptime"]["value_template"], heartbeat) == "3600"
    assert render(components["dropped"]["value_template"], heartbeat) == "2"
    assert render(components["polls_failed"]["value_template"], heartbeat) == "5"


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
    home_assistant = broker.add("homeassistant", Role.HOMEASSISTANT)
    agent = Agent(tmp_path, broker.data_dir, FARM, broker.url(credentials), simulator.modbus_url).start()
    watcher = MqttWatcher(broker.port, home_assistant.username, home_assistant.password,
                          ["homeassistant/#", f"kub/farms/{FARM}/state", f"kub/farms/{FARM}/ack"])
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

        # the time zone number's state is what the controller holds, read back from 0x003F
        state = f"kub/farms/{FARM}/state"
        timezone = lambda: (watcher.last(state) or {}).get("values", {}).get("timezone")  # noqa: E731
        wait_until(lambda: timezone() == 180, 15, what="the time zone read back")
        watcher.client.publish(components["timezone_minutes"]["command_topic"], b"240", qos=1)
        wait_until(lambda: timezone() == 240, 15, what="the new time zone read back")
        watcher.client.publish(components["timezone_minutes"]["command_topic"], b"5000", qos=1)
        wait_until(lambda: any(not a["ok"] for a in watcher.payloads(f"kub/farms/{FARM}/ack")), 10, what="a refusal")
        assert timezone() == 240, "a refused value is not what the number shows"

        # Home Assistant restarts: its birth message, with its own login, brings the config again
        before = len(ha_configs(watcher))
        birth = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
        birth.username_pw_set(home_assistant.username, home_assistant.password)
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


@pytest.mark.parametrize("language", ["en", "ru"])
def test_the_farms_open_alerts_are_an_entity_that_stays_available_when_the_farm_goes_silent(language: str) -> None:
    components = check_device_config(config(language=language))
    alerts = components["open_alerts"]
    assert alerts["state_topic"] == alerts["json_attributes_topic"] == "kub/alerts/farm-001"
    assert alerts["availability"] == [{"topic": "kub/discovery/status"}], "the discovery node's, not the farm's"
    assert alerts["name"] == ("Открытые тревоги" if language == "ru" else "Open alerts")
    published = {"farm_id": FARM, "ts": "2026-12-01T10:00:00.000Z", "alerts": [
        {"id": "a1", "farm_id": FARM, "kind": "farm_silent", "severity": "critical", "state": "open",
         "opened": "2026-12-01T09:50:00.000Z", "message": "Птичник №1 молчит 10 мин"},
        {"id": "a2", "farm_id": FARM, "kind": "value_high", "severity": "warning", "state": "acknowledged",
         "opened": "2026-12-01T09:40:00.000Z", "message": "CO2 3100 ppm", "acknowledged_by": "olga"},
        {"id": "a3", "farm_id": FARM, "kind": "alarm", "severity": "warning", "state": "cleared",
         "opened": "2026-12-01T09:00:00.000Z", "message": "alarm bit 3"}]}
    assert render(alerts["value_template"], published) == "2"
    assert json.loads(render(alerts["json_attributes_template"], published)) == {
        "alerts": ["Птичник №1 молчит 10 мин", "CO2 3100 ppm"], "unacknowledged": 1, "critical": 1}
    assert render(alerts["value_template"], {"farm_id": FARM, "ts": "x", "alerts": []}) == "0"
