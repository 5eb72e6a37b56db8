"""Home Assistant's rules for MQTT discovery configs, as tests check them (HA cannot run here).

From home-assistant/core ``homeassistant/components/mqtt/``: ``abbreviations.py`` (the
abbreviations below are copied from it: the ones for the platforms kubmesh uses,
the device and origin maps, and the device-based discovery keys), and the
schemas of ``sensor.py``, ``binary_sensor.py``, ``number.py``, ``button.py``,
``mixins.py`` and ``discovery.py``; device classes and units from
``homeassistant/components/sensor/const.py``.
"""

from __future__ import annotations

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
    for component_id, raw in root["components"].items():
        component = expand(raw, ABBREVIATIONS, component_id)
        platform = component["platform"]
        assert platform in PLATFORM_KEYS, f"{component_id}: platform {platform!r}"
        assert set(component) <= PLATFORM_KEYS[platform], (component_id, set(component) - PLATFORM_KEYS[platform])
        assert REQUIRED[platform] <= set(component) or REQUIRED[platform] <= set(root), component_id
        assert component.get("unique_id"), f"{component_id}: device-based discovery needs a unique_id"
        assert component["unique_id"] not in unique_ids, f"{component_id}: unique_id used twice"
        unique_ids.add(component["unique_id"])
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
        assert component.get("step", 1) >= 0.001, component_id
        assert component.get("mode", "auto") in ("auto", "box", "slider"), component_id
