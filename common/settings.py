"""Settings of every service: one pydantic model each, filled from flags > environment > YAML > defaults.

Each model names the environment variables and YAML keys it reads (the owner's
``FARM_ID``, ``farm.id`` …) in ``ENV`` and ``YAML``; any field can also be set
as ``KUBMESH_<FIELD>``. A bad value stops the service at start with a message
that names the key and where it came from.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from common.mqtt import MqttUrl, MqttUrlError


class ConfigError(ValueError):
    """A configuration that cannot be used; the message says which key, where, and why."""


class ServiceSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ENV: ClassVar[dict[str, str]] = {
        "MQTT_URL": "mqtt_url",
        "DATA_DIR": "data_dir",
        "LOG_LEVEL": "log_level",
        "BASE_TOPIC": "base_topic",
    }
    YAML: ClassVar[dict[str, str]] = {
        "mqtt.url": "mqtt_url",
        "mqtt.base_topic": "base_topic",
        "mqtt.keepalive": "keepalive",
        "mqtt.reconnect_max": "reconnect_max",
    }

    data_dir: Path = Path("./kubmesh-data")
    mqtt_url: str | None = None
    base_topic: str = "kub"
    ha_prefix: str = "homeassistant"
    keepalive: int = 30
    reconnect_max: float = Field(30.0, ge=0.1, le=3600)  # seconds: the ceiling of the reconnect backoff
    log_level: str = "INFO"
    log_json: bool = False

    @field_validator("mqtt_url")
    @classmethod
    def _valid_url(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                MqttUrl.parse(value).ssl_context()
            except MqttUrlError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("keepalive")
    @classmethod
    def _keepalive(cls, value: int) -> int:
        if not 2 <= value <= 3600:
            raise ValueError("keepalive must be between 2 and 3600 seconds")
        return value

    def mqtt(self) -> MqttUrl:
        return MqttUrl.parse(self.mqtt_url) if self.mqtt_url else MqttUrl()


S = TypeVar("S", bound=ServiceSettings)


def load_settings(
    model: type[S],
    *,
    config_file: Path | str | None = None,
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> S:
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}

    if config_file is not None:
        for key, value in _read_yaml(Path(config_file)).items():
            field = model.YAML.get(key) or (key if key in model.model_fields else None)
            if field is None:
                raise ConfigError(f"{config_file}: unknown key {key!r}")
            values[field] = value
            origin[field] = f"{config_file}: key {key!r}"

    known_env = {**ServiceSettings.ENV, **model.ENV}
    for name, field in known_env.items():
        if name in env and env[name] != "":
            values[field] = env[name]
            origin[field] = f"environment variable {name}"
    for field in model.model_fields:
        name = f"KUBMESH_{field.upper()}"
        if name in env and env[name] != "":
            values[field] = env[name]
            origin[field] = f"environment variable {name}"

    for field, value in (flags or {}).items():
        if value is not None:
            values[field] = value
            origin[field] = f"--{field.replace('_', '-')}"

    try:
        return model.model_validate(values)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        field = str(error["loc"][0]) if error.get("loc") else "?"
        where = origin.get(field, f"setting {field!r}")
        raise ConfigError(f"{where}: {error['msg']}") from None


def _read_yaml(path: Path) -> dict[str, Any]:
    """The file's keys flattened to dotted paths (``farm.id``); lists stay values."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    return _flatten(data)


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat
