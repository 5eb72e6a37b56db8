"""Home Assistant discovery configs generated from the profile, checked against HA's documented rules."""

from __future__ import annotations

import jinja2

from broker.topics import Topics
from farm_agent.homeassistant import config_topic, device_config
from farm_agent.profile import load_profile

PROFILE = load_profile()
# HA's abbreviations we use, and the device classes HA accepts with each unit (HOMEASSISTANT.md)
KNOWN_KEYS = {"p", "uniq_id", "name", "stat_t", "val_tpl", "unit_of_meas", "dev_cla", "stat_cla", "sug_dsp_prc",
              "exp_aft", "options", "cmd_t", "pl_prs", "min", "max", "step", "mode", "ent_cat"}
UNITS = {"temperature": {"°C"}, "humidity": {"%"}, "carbon_dioxide": {"ppm"}, "pressure": {"Pa"}, "enum": {None},
         "timestamp": {None}, "connectivity": {None}, "problem": {None}}
REQUIRED = {"sensor": {"stat_t"}, "binary_sensor": {"stat_t"}, "number": {"cmd_t"}, "button": {"cmd_t"}}


def config(farm_id: str = "farm-001") -> dict:  # type: ignore[type-arg]
    return device_config(PROFILE, Topics(), farm_id, farm_name="Птичник №1", firmware="4.01", location="house 1",
                         agent_version="1.0")


def test_device_config_follows_the_documented_schema() -> None:
    document = config()
    assert config_topic("homeassistant", "farm-001") == "homeassistant/device/kubmesh-farm-001/config"
    assert document["dev"] == {"ids": ["kubmesh-farm-001"], "name": "Птичник №1", "mdl": "KUB-1063", "mf": "KUB",
                               "sw": "4.01", "sa": "house 1"}
    assert document["o"]["name"] == "kubmesh"
    assert document["avty"] == [{"t": "kub/farms/farm-001/status", "val_tpl": "{{ value_json.state }}"}]
    unique_ids = set()
    for name, component in document["cmps"].items():
        assert set(component) <= KNOWN_KEYS, (name, set(component) - KNOWN_KEYS)
        assert REQUIRED[component["p"]] <= set(component), name
        assert component["uniq_id"] not in unique_ids
        unique_ids.add(component["uniq_id"])
        if "dev_cla" in component and component["p"] == "sensor":
            assert component.get("unit_of_meas") in UNITS[component["dev_cla"]], name
        if component["p"] == "number":
            assert component["min"] < component["max"] and component["step"] >= 0.001


def test_core_sensors_commands_and_alarms_are_there() -> None:
    components = config()["cmps"]
    for name, device_class in [("temp_inside", "temperature"), ("humidity", "humidity"),
                               ("co2", "carbon_dioxide"), ("pressure", "pressure")]:
        assert components[name]["dev_cla"] == device_class and components[name]["stat_cla"] == "measurement"
    assert "dev_cla" not in components["nh3"] and components["nh3"]["unit_of_meas"] == "ppm"
    assert components["reset_alarms"] == {
        "p": "button", "uniq_id": "kubmesh-farm-001-reset_alarms", "name": "Reset latched alarms",
        "cmd_t": "kub/farms/farm-001/set/reset_alarms", "pl_prs": "1",
    }
    assert components["timezone_minutes"]["p"] == "number"
    assert components["alarm_active"]["dev_cla"] == "problem"


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
