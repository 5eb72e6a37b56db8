"""Home Assistant's rules for MQTT discovery configs, as tests check them (HA cannot run here).

From home-assistant/core ``homeassistant/components/mqtt/``: ``abbreviations.py`` (the
abbreviations below are copied from it: the ones for the platforms kubmesh uses,
the device and origin maps, and the device-based discovery keys), and the
schemas of ``sensor.py``, ``binary_sensor.py``, ``number.py``, ``button.py``,
``mixins.py`` and ``discovery.py``; device classes and units from
``homeassistant/components/sensor/const.py``.

Device-based discovery (``discovery.py`` ``_merge_common_device_options``) copies only
``SHARED_OPTIONS`` (``schemas.py``) of the device's root into a component that does not set
them: ``qos`` is not among them, so a component's QoS is its own or HA's default 0. Entity ids:
``default_entity_id`` is a whole entity id, ``<platform>.<object id>``, checked as HA's
``valid_entity_id`` does (``homeassistant/core.py``: ``[a-z0-9_]``, no leading or trailing ``_``).
"""

from __future__ import annotations

import re
from typing import Any

ABBREVIATIONS = {
    "avty": "availability", "avty_mode": "availability_mode", "avty_t": "availability_topic",
    "avty_tpl": "availability_template", "cmd_t": "command_topic", "cmd_tpl": "command_template",
    "cmps": "components", "def_ent_id": "default_entity_id", "dev": "device", "dev_cla": "device_class",
    "e": "encoding", "en": "enabled_by_default", "ent_cat": "entity_category", "ent_pic": "entity_picture",
    "exp_aft": "expire_after", "frc_upd": "force_update", "ic": "icon", "json_attr_t": "json_attributes_topic",
    "json_attr_tpl": "json_attributes_template", "lrst_t": "last_reset_topic",
    "lrst_val_tpl": "last_reset_value_template", "max": "max", "min": "min", "mode": "mode", "name": "name",
    "o": "origin", "obj_id": "object_id", "off_dly": "off_delay", "ops": "options", "opt": "optimistic",
    "p": "platform", "pl_avail": "payload_available", "pl_not_avail": "payload_not_available",
    "pl_off": "payload_off", "pl_on": "payload_on", "pl_prs": "payload_press", "pl_rst": "payload_reset",
    "qos": "qos", "ret": "retain", "stat_cla": "state_class", "stat_t": "state_topic", "step": "step",
    "sug_dsp_prc": "suggested_display_precision", "t": "topic", "uniq_id": "unique_id",
    "unit_of_meas": "unit_of_measurement", "val_tpl": "value_template",
}
DEVICE_ABBREVIATIONS = {
    "cns": "connections", "cu": "configuration_url", "ids": "identifiers", "name": "name", "mf": "manufacturer",
    "mdl": "model", "mdl_id": "model_id", "hw": "hw_version", "sw": "sw_version", "sa": "suggested_area",
    "sn": "serial_number", "via_device": "via_device",
}
ORIGIN_ABBREVIATIONS = {"name": "name", "sw": "sw_version", "url": "support_url"}
SHARED_OPTIONS = {"availability", "availability_mode", "availability_template", "availability_topic",
                  "command_topic", "payload_available", "payload_not_available", "state_topic"}
DEFAULT_QOS = 0
VALID_ENTITY_ID = re.compile(r"^(?!.+__)(?!_)[\da-z_]+(?<!_)\.(?!_)[\da-z_]+(?<!_)$")
VALID_ICON = re.compile(r"^[a-z0-9_-]+:[a-z0-9_-]+$")  # cv.icon: "prefix:name"

COMMON = {"platform", "unique_id", "name", "availability", "availability_mode", "availability_topic",
          "availability_template", "payload_available", "payload_not_available", "device", "origin",
          "entity_category", "entity_picture", "enabled_by_default", "icon", "json_attributes_topic",
          "json_attributes_template", "default_entity_id", "object_id", "encoding", "qos"}
PLATFORM_KEYS = {
    "sensor": COMMON | {"state_topic", "value_template", "unit_of_measurement", "device_class", "state_class",
                        "expire_after", "force_update", "last_reset_value_template", "options",
                        "suggested_display_precision"},
    "binary_sensor": COMMON | {"state_topic", "value_template", "device_class", "expire_after", "force_update",
                               "off_delay", "payload_on", "payload_off"},
    "number": COMMON | {"command_topic", "command_template", "state_topic", "value_template", "min", "max", "step",
                        "mode", "unit_of_measurement", "device_class", "optimistic", "payload_reset", "retain"},
    "button": COMMON | {"command_topic", "command_template", "payload_press", "device_class", "retain"},
}
REQUIRED = {"sensor": {"state_topic"}, "binary_sensor": {"state_topic"}, "number": {"command_topic"},
            "button": {"command_topic"}}
# sensor device classes and the units HA accepts with them (None: no unit)
SENSOR_UNITS: dict[str, set[str | None]] = {
    "temperature": {"°C", "°F", "K"}, "humidity": {"%"}, "carbon_dioxide": {"ppm"},
    "pressure": {"Pa", "hPa", "kPa", "bar", "cbar", "mbar", "mmHg", "inHg", "psi"},
    "timestamp": {None}, "enum": {None}, "duration": {"s", "ms", "min", "h", "d"},
}
BINARY_SENSOR_CLASSES = {"problem", "connectivity", "safety", "running", "power", "opening"}
STATE_CLASSES = {"measurement", "total", "total_increasing", "measurement_angle"}
NO_STATE_CLASS = {"timestamp", "enum"}  # HA refuses a state_class on these


def expand(config: dict[str, Any], abbreviations: dict[str, str], where: str) -> dict[str, Any]:
    expanded: dict[str, Any] = {}
    full_names = set(abbreviations.values())
    for key, value in config.items():
        full = abbreviations.get(key, key)
        assert key in abbreviations or key in full_names, f"{where}: {key!r} is neither an HA abbreviation nor a key"
        assert full not in expanded, f"{where}: {full!r} given twice"
        expanded[full] = value
    return expanded


def check_device_config(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Assert the device-based discovery config follows HA's rules; returns its components, keys expanded."""
    root = expand(document, ABBREVIATIONS, "root")
    device = expand(root["device"], DEVICE_ABBREVIATIONS, "device")
    assert device.get("identifiers") and device.get("name"), "device needs identifiers and a name"
    if "configuration_url" in device:  # cv.configuration_url: an http(s) URL or a homeassistant:// one
        assert re.match(r"^https?://[^/\s]+", device["configuration_url"]), device["configuration_url"]
    origin = expand(root["origin"], ORIGIN_ABBREVIATIONS, "origin")
    assert origin.get("name"), "origin needs a name"
    availability = root.get("availability", [])
    for entry in availability:
        entry = expand(entry, ABBREVIATIONS, "availability")
        assert entry.get("topic"), "availability entries need a topic"
        # our status payload is JSON: without a template HA would compare the whole JSON with "online"
        assert "value_json.state" in entry.get("value_template", ""), "availability needs a value_template"
    components: dict[str, dict[str, Any]] = {}
    unique_ids: set[str] = set()
    entity_ids: set[str] = set()
    for component_id, raw in root["components"].items():
        component = expand(raw, ABBREVIATIONS, component_id)
        if "availability" in component:  # its own replaces the device's (not merged), abbreviations expanded
            component["availability"] = [expand(entry, ABBREVIATIONS, f"{component_id} availability")
                                         for entry in component["availability"]]
            assert all(entry.get("topic") and _valid_topic(entry["topic"]) for entry in component["availability"])
        for option in SHARED_OPTIONS & set(root) - set(component):  # what HA merges in, and nothing else
            component[option] = root[option]
        component.setdefault("qos", DEFAULT_QOS)
        assert component["qos"] in (0, 1, 2), component_id
        platform = component["platform"]
        assert platform in PLATFORM_KEYS, f"{component_id}: platform {platform!r}"
        assert set(component) <= PLATFORM_KEYS[platform], (component_id, set(component) - PLATFORM_KEYS[platform])
        assert REQUIRED[platform] <= set(component) or REQUIRED[platform] <= set(root), component_id
        assert component.get("unique_id"), f"{component_id}: device-based discovery needs a unique_id"
        assert component["unique_id"] not in unique_ids, f"{component_id}: unique_id used twice"
        unique_ids.add(component["unique_id"])
        if "default_entity_id" in component:
            entity_id = component["default_entity_id"]
            assert VALID_ENTITY_ID.match(entity_id), f"{component_id}: invalid entity id {entity_id!r}"
            assert entity_id.split(".")[0] == platform, f"{component_id}: {entity_id!r} is not a {platform}"
            assert entity_id not in entity_ids, f"{component_id}: entity id used twice"
            entity_ids.add(entity_id)
            # before 2025.10 HA knows only object_id: the same id, without its platform
            assert component.get("object_id") == entity_id.split(".", 1)[1], f"{component_id}: object_id"
        if "icon" in component:
            assert VALID_ICON.match(component["icon"]), f"{component_id}: icon {component['icon']!r}"
        for key in ("state_topic", "json_attributes_topic"):
            if key in component:
                assert _valid_topic(component[key]), f"{component_id}: {key}"
        if "command_topic" in component:
            assert _valid_topic(component["command_topic"]) and not set("+#") & set(component["command_topic"])
        if "json_attributes_template" in component:
            assert "json_attributes_topic" in component, f"{component_id}: an attributes template needs its topic"
        _check_platform(component_id, platform, component)
        components[component_id] = component
    return components


def check_entity_config(document: dict[str, Any]) -> dict[str, Any]:
    """Assert a per-entity discovery config (``<prefix>/<component>/<node>/<object>/config``) follows HA's rules."""
    entity = expand(document, ABBREVIATIONS, "entity")
    device = expand(entity["device"], DEVICE_ABBREVIATIONS, "device")
    assert device.get("identifiers") and device.get("name"), "device needs identifiers and a name"
    platform = entity["platform"]
    assert set(entity) <= PLATFORM_KEYS[platform], set(entity) - PLATFORM_KEYS[platform]
    assert REQUIRED[platform] <= set(entity) and entity.get("unique_id")
    _check_platform("entity", platform, entity)
    return entity


def _check_platform(component_id: str, platform: str, component: dict[str, Any]) -> None:
    category = component.get("entity_category")
    assert category in (None, "diagnostic", "config"), component_id
    device_class = component.get("device_class")
    state_class = component.get("state_class")
    if state_class is not None:
        assert platform == "sensor" and state_class in STATE_CLASSES, component_id
    if platform == "sensor":
        assert category != "config", f"{component_id}: HA refuses entity_category config on sensors"
        if device_class is not None:
            assert device_class in SENSOR_UNITS, f"{component_id}: device class {device_class!r}"
            assert component.get("unit_of_measurement") in SENSOR_UNITS[device_class], component_id
            assert not (device_class in NO_STATE_CLASS and state_class), component_id
        if device_class == "enum":
            assert component["options"], f"{component_id}: an enum sensor lists its options"
    elif platform == "binary_sensor":
        assert device_class is None or device_class in BINARY_SENSOR_CLASSES, component_id
    elif platform == "number":
        assert component.get("min", 1) < component.get("max", 100), component_id
        if "state_topic" in component:
            assert "value_template" in component, f"{component_id}: a number's state needs its template"
        assert component.get("step", 1) >= 0.001, component_id
        assert component.get("mode", "auto") in ("auto", "box", "slider"), component_id


def _valid_topic(topic: object) -> bool:
    """util.valid_subscribe_topic, for the topics we use: non-empty, no NUL, wildcards only as whole levels."""
    if not isinstance(topic, str) or not topic or "\0" in topic or len(topic.encode()) > 65535:
        return False
    levels = topic.split("/")
    return all(level in ("+", "#") or not set("+#") & set(level) for level in levels) and "#" not in levels[:-1]
