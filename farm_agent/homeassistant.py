"""Home Assistant MQTT discovery for a farm, generated from the device profile.

One device per farm, announced with HA's device-based discovery
(``{prefix}/device/kubmesh-{farm}/config`` with ``cmps``, HA ≥ 2024.11): a sensor
per profile value, ``problem`` binary sensors for alarms and warnings (their
attributes list what is raised), buttons and numbers for the writable names (a
setting's number shows the value read back from the device), the farm's open alerts from
the discovery node, and diagnostic
entities (link, heartbeat counters, sensor faults, digital outputs). The config
is retained and sent again when HA announces itself on ``{prefix}/status``.

Rules of HA's that this follows (``homeassistant/components/mqtt/``):

- ``qos`` is set on every component: HA merges only ``SHARED_OPTIONS`` of the
  device's root into its components (``schemas.py``: availability, topics,
  payloads; not ``qos``), so a root ``qos`` would leave commands at QoS 0;
- a component's own ``availability`` replaces the device's: the open alerts follow the discovery node;
- ``default_entity_id`` (``sensor.farm_001_temp_inside``) makes entity ids stable
  and independent of the farm's name on HA 2025.10 and later; ``object_id``
  (``farm_001_temp_inside``) does the same before 2025.10, where ``default_entity_id``
  is unknown (later versions warn of it and, since 2026.4, ignore it);
- every name is in one language, ``homeassistant.language``; the device's name is
  the farm's own.

Templates read ``value_json['values'][name]``: ``value_json.values`` would be
the dict's ``values`` method in Jinja. A ``null`` reading renders ``None``,
which HA shows as unknown, not 0. HA renders templates in an immutable sandbox,
so attribute templates build lists in a ``namespace`` instead of updating dicts.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from contract.topics import HA_NODE_PREFIX, Topics, ha_device_config_topic, ha_node_id
from farm_agent.profile import Profile, ValueSpec, WritableSpec

ORIGIN_NAME = "kubmesh"
QOS = 1  # commands and readings at least once: a lost "reset alarms" is not a detail
Language = Literal["en", "ru"]

# names of the entities that do not come from the profile: (English, Russian)
NAMES: dict[str, tuple[str, str]] = {
    "alarm_active": ("Alarm", "Авария"),
    "warning_active": ("Warning", "Предупреждение"),
    "alarm_count": ("Active alarms", "Активные аварии"),
    "latched_count": ("Latched alarms", "Зарегистрированные аварии"),
    "latched_warning_count": ("Latched warnings", "Зарегистрированные предупреждения"),
    "sensor_faults": ("Sensor faults", "Неисправности датчиков"),
    "modbus_link": ("Modbus link", "Связь Modbus"),
    "backlog": ("Backlog", "Очередь показаний"),
    "dropped": ("Dropped readings", "Потерянные показания"),
    "polls_failed": ("Failed polls", "Неудачные опросы"),
    "uptime": ("Agent uptime", "Время работы агента"),
    "last_poll": ("Last poll", "Последний опрос"),
    "open_alerts": ("Open alerts", "Открытые тревоги"),
}
# an unnamed bit, said as the web says it
KIND_WORDS = {"alarm": ("alarm bit", "авария, бит"), "warning": ("warning bit", "предупреждение, бит")}
STATUS_TEXTS: dict[str, tuple[str, str]] = {
    "pending": ("pending", "нет данных"),
    "break": ("sensor break", "обрыв датчика"),
    "error": ("sensor error", "ошибка датчика"),
    "disabled": ("disabled", "отключён"),
}


def device_config(
    profile: Profile,
    topics: Topics,
    farm_id: str,
    *,
    farm_name: str,
    firmware: str | None,
    location: str | None,
    agent_version: str,
    language: str = "ru",
    web_url: str | None = None,
    expire_after_s: int | None = None,
    via_device: str | None = None,
) -> dict[str, Any]:
    lang: Language = "ru" if language == "ru" else "en"
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
    if web_url:
        device["cu"] = f"{web_url.rstrip('/')}/farms/{farm_id}"
    entities = _Entities(node, farm_id, lang)
    state = topics.state(farm_id)
    for spec in profile.values:
        if spec.name in profile.setting_states:
            continue  # shown by its setting's number
        if spec.type == "bits16":
            entities.bitfield(spec, state)
        else:
            entities.sensor(spec, state, expire_after_s)
    entities.alarms(topics.alarms(farm_id))
    entities.alerts(topics.alerts(farm_id), topics.discovery_status())
    for writable in profile.writable:
        entities.writable(writable, topics.set(farm_id, writable.name), state)
    entities.diagnostics(profile, topics, farm_id)
    return {
        "dev": device,
        "o": {"name": ORIGIN_NAME, "sw": agent_version},
        "avty": [{"t": topics.status(farm_id), "val_tpl": "{{ value_json.state }}"}],
        "cmps": entities.components,
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
        "p": "sensor", "uniq_id": f"{node}-poll_cycle",
        **entity_ids("sensor", first_house, "site_poll_cycle"),
        "name": "Цикл опроса" if language == "ru" else "Poll cycle",
        "dev": {"ids": [node], "name": site, "mdl": "kubmesh site"},
        "o": {"name": ORIGIN_NAME, "sw": agent_version},
        "stat_t": topics.heartbeat(first_house), "val_tpl": "{{ value_json.cycle_s }}", "unit_of_meas": "s",
        "dev_cla": "duration", "stat_cla": "measurement", "ent_cat": "diagnostic", "qos": 1,
        "avty": [{"t": topics.status(first_house), "val_tpl": "{{ value_json.state }}"}],
    }


def site_config_topic(prefix: str, first_house: str) -> str:
    return f"{prefix}/sensor/{ha_node_id(first_house)}/site_poll_cycle/config"


def entity_id(platform: str, farm_id: str, key: str) -> str:
    """``sensor.farm_001_temp_inside``: HA's entity ids allow only ``[a-z0-9_]``."""
    return f"{platform}.{farm_id.replace('-', '_')}_{key}"


def entity_ids(platform: str, farm_id: str, key: str) -> dict[str, str]:
    """The entity id for every HA version: ``def_ent_id`` (2025.10 on), ``obj_id`` (before)."""
    whole = entity_id(platform, farm_id, key)
    return {"def_ent_id": whole, "obj_id": whole.split(".", 1)[1]}


class _Entities:
    def __init__(self, node: str, farm_id: str, language: Language) -> None:
        self.node = node
        self.farm_id = farm_id
        self.language = language
        self.components: dict[str, dict[str, Any]] = {}

    def say(self, pair: tuple[str, str]) -> str:
        return pair[1] if self.language == "ru" else pair[0]

    def add(self, key: str, platform: str, name: str, **options: Any) -> dict[str, Any]:
        entity: dict[str, Any] = {
            "p": platform, "uniq_id": f"{self.node}-{key}", **entity_ids(platform, self.farm_id, key),
            "name": name, "qos": QOS,
        }
        entity |= {k: v for k, v in options.items() if v is not None}
        self.components[key] = entity
        return entity

    def sensor(self, spec: ValueSpec, state_topic: str, expire_after_s: int | None) -> None:
        name = spec.label.get(self.language) if spec.label else spec.name
        value = f"value_json['values']['{spec.name}']"
        if spec.type == "enum":
            options = {int(raw): label for raw, label in spec.options.items()}
            self.add(spec.name, "sensor", name, stat_t=state_topic, dev_cla="enum", options=list(options.values()),
                     val_tpl=f"{{{{ {options!r}.get({value}) }}}}", ic=spec.icon)
            return
        entity = self.add(spec.name, "sensor", name, stat_t=state_topic, val_tpl=f"{{{{ {value} }}}}",
                          unit_of_meas=spec.unit, dev_cla=spec.device_class, stat_cla=spec.state_class,
                          sug_dsp_prc=spec.decimals, exp_aft=expire_after_s or None, ic=spec.icon)
        if spec.sentinels:  # why a reading is unknown: the sensor's status beside its value
            entity |= {"json_attr_t": state_topic,
                       "json_attr_tpl": f"{{{{ {{'status': (value_json.get('status') or {{}}).get('{spec.name}', "
                                        f"'ok')}} | tojson }}}}"}

    def bitfield(self, spec: ValueSpec, state_topic: str) -> None:
        """The raw word as a diagnostic sensor, and each labelled bit (the alarm relay) as a binary sensor read
        from that word (a reading carries no decoded bits)."""
        name = spec.label.get(self.language) if spec.label else spec.name
        self.add(spec.name, "sensor", name, stat_t=state_topic, ent_cat="diagnostic",
                 val_tpl=f"{{{{ value_json['values']['{spec.name}'] }}}}", ic=spec.icon or "mdi:electric-switch")
        for bit, bit_name in sorted(spec.bits.items()):
            label = spec.bit_labels.get(bit)
            self.add(f"{spec.name}_{bit_name}", "binary_sensor", label.get(self.language) if label else bit_name,
                     stat_t=state_topic, ent_cat="diagnostic", ic="mdi:alarm-light" if "alarm" in bit_name else None,
                     val_tpl=(f"{{% set w = value_json['values'].get('{spec.name}') %}}"
                              f"{{{{ 'None' if w is none else ('ON' if (w // {1 << bit}) % 2 else 'OFF') }}}}"))

    def alarms(self, topic: str) -> None:
        lists = {"alarm_active": ("active", "alarm"), "warning_active": ("warnings", "warning"),
                 "alarm_count": ("active", "alarm"), "latched_count": ("latched", "alarm"),
                 "latched_warning_count": ("latched_warnings", "warning")}
        for key, (field, kind) in lists.items():
            attributes = {"json_attr_t": topic, "json_attr_tpl": self._raised_template(field, kind)}
            if key.endswith("_active"):
                self.add(key, "binary_sensor", self.say(NAMES[key]), stat_t=topic, dev_cla="problem",
                         val_tpl=f"{{{{ 'ON' if value_json.get('{field}') else 'OFF' }}}}", **attributes)
            else:
                self.add(key, "sensor", self.say(NAMES[key]), stat_t=topic, stat_cla="measurement",
                         val_tpl=f"{{{{ (value_json.get('{field}') or []) | length }}}}",
                         ic="mdi:alert-circle-outline", **attributes)

    def alerts(self, topic: str, discovery_status: str) -> None:
        """The farm's open alerts from the discovery node's alerting (``{base}/alerts/{farm}``, retained).

        Available while the discovery node is, not while the farm is: a farm gone silent is itself an alert,
        which its own availability would hide.
        """
        open_ = "(value_json.get('alerts') or []) | rejectattr('state', 'eq', 'cleared') | list"
        self.add("open_alerts", "sensor", self.say(NAMES["open_alerts"]), stat_t=topic, stat_cla="measurement",
                 ic="mdi:bell-alert", avty=[{"t": discovery_status}], val_tpl=f"{{{{ {open_} | length }}}}",
                 json_attr_t=topic,
                 json_attr_tpl=(f"{{% set open = {open_} %}}"
                                "{{ {'alerts': open | map(attribute='message') | list,"
                                " 'unacknowledged': open | selectattr('state', 'eq', 'open') | list | length,"
                                " 'critical': open | selectattr('severity', 'eq', 'critical') | list | length}"
                                " | tojson }}"))

    def _raised_template(self, field: str, kind: str) -> str:
        """``{"alarms": [labels in the configured language], "bits": [numbers]}`` of one list of ``alarms``."""
        other = "en" if self.language == "ru" else "ru"
        word = self.say(KIND_WORDS[kind])
        label = (f"(a.get('labels') or {{}}).get('{self.language}') or (a.get('labels') or {{}}).get('{other}') "
                 f"or ('{word} ' ~ a.bit)")
        return (f"{{% set ns = namespace(found=[]) %}}{{% for a in value_json.get('{field}') or [] %}}"
                f"{{% set ns.found = ns.found + [{label}] %}}{{% endfor %}}"
                f"{{{{ {{'alarms': ns.found, 'bits': (value_json.get('{field}') or []) | map(attribute='bit') | list}}"
                f" | tojson }}}}")

    def writable(self, spec: WritableSpec, command_topic: str, state_topic: str) -> None:
        name = spec.label.get(self.language) if spec.label else spec.name
        if spec.kind == "action":
            self.add(spec.name, "button", name, cmd_t=command_topic, pl_prs=str(spec.value), ic=spec.icon)
            return
        options: dict[str, Any] = {}
        if spec.state is not None:  # the device's own value: a refused write does not stay on screen
            options = {"stat_t": state_topic, "val_tpl": f"{{{{ value_json['values'].get('{spec.state}') }}}}"}
        self.add(spec.name, "number", name, cmd_t=command_topic, min=spec.min, max=spec.max, step=spec.step or 1,
                 mode="box", ent_cat="config", unit_of_meas=spec.unit, ic=spec.icon, **options)

    def diagnostics(self, profile: Profile, topics: Topics, farm_id: str) -> None:
        heartbeat, state = topics.heartbeat(farm_id), topics.state(farm_id)
        diagnostic = {"ent_cat": "diagnostic"}
        self.add("modbus_link", "binary_sensor", self.say(NAMES["modbus_link"]), dev_cla="connectivity",
                 stat_t=heartbeat, val_tpl="{{ 'ON' if value_json.modbus == 'ok' else 'OFF' }}", **diagnostic)
        for key, state_class in (("backlog", "measurement"), ("dropped", "total_increasing"),
                                 ("polls_failed", "total_increasing")):
            self.add(key, "sensor", self.say(NAMES[key]), stat_t=heartbeat, val_tpl=f"{{{{ value_json.{key} }}}}",
                     stat_cla=state_class, **diagnostic)
        self.add("uptime", "sensor", self.say(NAMES["uptime"]), stat_t=heartbeat, dev_cla="duration",
                 unit_of_meas="s", val_tpl="{{ value_json.uptime_s | round(0) | int }}", **diagnostic)
        self.add("last_poll", "sensor", self.say(NAMES["last_poll"]), dev_cla="timestamp", stat_t=state,
                 val_tpl="{{ value_json.ts }}", **diagnostic)
        self.add("sensor_faults", "sensor", self.say(NAMES["sensor_faults"]), stat_t=state, stat_cla="measurement",
                 ic="mdi:alert-outline", json_attr_t=state, json_attr_tpl=self._faults_template(profile),
                 val_tpl="{{ (value_json.get('status') or {}).values() | reject('eq', 'ok') | list | length }}",
                 **diagnostic)

    def _faults_template(self, profile: Profile) -> str:
        """``{label: status text}`` of every value whose sensor is not ``ok``."""
        labels = {v.name: v.label.get(self.language) if v.label else v.name for v in profile.values}
        texts = {status: self.say(pair) for status, pair in STATUS_TEXTS.items()}
        return (f"{{% set labels = {json.dumps(labels, ensure_ascii=False)} %}}"
                f"{{% set texts = {json.dumps(texts, ensure_ascii=False)} %}}"
                "{% set ns = namespace(found=[]) %}"
                "{% for name, status in (value_json.get('status') or {}).items() if status != 'ok' %}"
                "{% set ns.found = ns.found + [[labels.get(name, name), texts.get(status, status)]] %}{% endfor %}"
                "{{ dict(ns.found) | tojson }}")
