"""Home Assistant MQTT discovery for a farm, generated from the device profile.

One device per farm, announced with HA's device-based discovery
(``{prefix}/device/kubmesh-{farm}/config`` with ``cmps``, HA ≥ 2024.11): a sensor
per profile value, ``problem`` binary sensors for alarms, buttons and numbers
for the writable names, and diagnostic entities. The config is retained and
sent again when HA announces itself on ``{prefix}/status``.

Templates read ``value_json['values'][name]``: ``value_json.values`` would be
the dict's ``values`` method in Jinja. A ``null`` reading renders ``None``,
which HA shows as unknown, not 0.
"""

from __future__ import annotations

from typing import Any

from contract.topics import HA_NODE_PREFIX, Topics, ha_device_config_topic, ha_node_id
from farm_agent.profile import Profile, ValueSpec

ORIGIN_NAME = "kubmesh"
BITFIELD_TYPES = ("bits16",)


def device_config(
    profile: Profile,
    topics: Topics,
    farm_id: str,
    *,
    farm_name: str,
    firmware: str | None,
    location: str | None,
    agent_version: str,
    language: str = "en",
    expire_after_s: int | None = None,
    via_device: str | None = None,
) -> dict[str, Any]:
    node = ha_node_id(farm_id)
    device: dict[str, Any] = {"ids": [node], "name": farm_name, "mdl": profile.model}
    if via_device:
        device["via_device"] = via_device
    if profile.manufacturer:
        device["mf"] = profile.manufacturer
    if firmware:
        device["sw"] = firmware
    if location:
        device["sa"] = location
    components: dict[str, dict[str, Any]] = {}
    for spec in profile.values:
        if spec.type not in BITFIELD_TYPES:
            components[spec.name] = _sensor(spec, topics.state(farm_id), node, language, expire_after_s)
    components.update(_alarm_entities(topics.alarms(farm_id), node, language))
    for writable in profile.writable:
        label = writable.label.get(language) if writable.label else writable.name
        entity: dict[str, Any] = {
            "uniq_id": f"{node}-{writable.name}",
            "name": label,
            "cmd_t": topics.set(farm_id, writable.name),
        }
        if writable.kind == "action":
            entity |= {"p": "button", "pl_prs": str(writable.value)}
        else:
            entity |= {"p": "number", "min": writable.min, "max": writable.max, "step": writable.step or 1,
                       "mode": "box", "ent_cat": "config"}
            if writable.unit:
                entity["unit_of_meas"] = writable.unit
        components[writable.name] = entity
    components.update(_diagnostics(topics, farm_id, node, language))
    return {
        "dev": device,
        "o": {"name": ORIGIN_NAME, "sw": agent_version},
        "avty": [{"t": topics.status(farm_id), "val_tpl": "{{ value_json.state }}"}],
        "qos": 1,
        "cmps": components,
    }


def config_topic(prefix: str, farm_id: str) -> str:
    return ha_device_config_topic(prefix, farm_id)


def site_node_id(first_house: str) -> str:
    """The site's device, named after its first house: ``kubmesh-site-house-1``."""
    return f"{HA_NODE_PREFIX}site-{first_house}"


def site_config(
    topics: Topics, first_house: str, site: str, agent_version: str, language: str = "en"
) -> dict[str, Any]:
    """The site as a device of its own, which every house's device names as its ``via_device``.

    A device exists in Home Assistant only with an entity: the site's is its bus's poll cycle, from
    the first house's heartbeat. It is announced by the first house, on that house's own node of the
    per-entity topic (the topic ACL lets a house publish only there), before the house's own device.
    """
    node = site_node_id(first_house)
    return {
        "p": "sensor", "uniq_id": f"{node}-poll_cycle", "name": "Цикл опроса" if language == "ru" else "Poll cycle",
        "dev": {"ids": [node], "name": site, "mdl": "kubmesh site"},
        "o": {"name": ORIGIN_NAME, "sw": agent_version},
        "stat_t": topics.heartbeat(first_house), "val_tpl": "{{ value_json.cycle_s }}", "unit_of_meas": "s",
        "dev_cla": "duration", "stat_cla": "measurement", "ent_cat": "diagnostic", "qos": 1,
        "avty": [{"t": topics.status(first_house), "val_tpl": "{{ value_json.state }}"}],
    }


def site_config_topic(prefix: str, first_house: str) -> str:
    return f"{prefix}/sensor/{ha_node_id(first_house)}/site_poll_cycle/config"


def _sensor(spec: ValueSpec, state_topic: str, node: str, language: str, expire_after_s: int | None) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "p": "sensor",
        "uniq_id": f"{node}-{spec.name}",
        "name": spec.label.get(language) if spec.label else spec.name,
        "stat_t": state_topic,
        "val_tpl": f"{{{{ value_json['values']['{spec.name}'] }}}}",
    }
    if spec.type == "enum":
        options = {int(raw): label for raw, label in spec.options.items()}
        entity |= {"dev_cla": "enum", "options": list(options.values()),
                   "val_tpl": f"{{{{ {options!r}.get(value_json['values']['{spec.name}']) }}}}"}
        return entity
    if spec.unit:
        entity["unit_of_meas"] = spec.unit
    if spec.device_class:
        entity["dev_cla"] = spec.device_class
    if spec.state_class:
        entity["stat_cla"] = spec.state_class
    entity["sug_dsp_prc"] = spec.decimals
    if expire_after_s:
        entity["exp_aft"] = expire_after_s
    return entity


def _alarm_entities(alarms_topic: str, node: str, language: str) -> dict[str, dict[str, Any]]:
    ru = language == "ru"
    return {
        "alarm_active": {
            "p": "binary_sensor", "uniq_id": f"{node}-alarm_active", "dev_cla": "problem",
            "name": "Авария" if ru else "Alarm", "stat_t": alarms_topic,
            "val_tpl": "{{ 'ON' if value_json.active | length > 0 else 'OFF' }}",
        },
        "warning_active": {
            "p": "binary_sensor", "uniq_id": f"{node}-warning_active", "dev_cla": "problem",
            "name": "Предупреждение" if ru else "Warning", "stat_t": alarms_topic,
            "val_tpl": "{{ 'ON' if value_json.warnings | length > 0 else 'OFF' }}",
        },
        "alarm_count": {
            "p": "sensor", "uniq_id": f"{node}-alarm_count", "name": "Активные аварии" if ru else "Active alarms",
            "stat_t": alarms_topic, "val_tpl": "{{ value_json.active | length }}", "stat_cla": "measurement",
        },
        "latched_count": {
            "p": "sensor", "uniq_id": f"{node}-latched_count",
            "name": "Зарегистрированные аварии" if ru else "Latched alarms",
            "stat_t": alarms_topic, "val_tpl": "{{ value_json.latched | length }}", "stat_cla": "measurement",
        },
    }


def _diagnostics(topics: Topics, farm_id: str, node: str, language: str) -> dict[str, dict[str, Any]]:
    ru = language == "ru"
    heartbeat = topics.heartbeat(farm_id)
    return {
        "modbus_link": {
            "p": "binary_sensor", "uniq_id": f"{node}-modbus_link", "dev_cla": "connectivity",
            "ent_cat": "diagnostic", "name": "Связь Modbus" if ru else "Modbus link", "stat_t": heartbeat,
            "val_tpl": "{{ 'ON' if value_json.modbus == 'ok' else 'OFF' }}",
        },
        "backlog": {
            "p": "sensor", "uniq_id": f"{node}-backlog", "ent_cat": "diagnostic",
            "name": "Очередь показаний" if ru else "Backlog", "stat_t": heartbeat,
            "val_tpl": "{{ value_json.backlog }}", "stat_cla": "measurement",
        },
        "last_poll": {
            "p": "sensor", "uniq_id": f"{node}-last_poll", "dev_cla": "timestamp", "ent_cat": "diagnostic",
            "name": "Последний опрос" if ru else "Last poll", "stat_t": topics.state(farm_id),
            "val_tpl": "{{ value_json.ts }}",
        },
    }
