"""The farm agent's settings: the owner's ``farm_config.yaml`` and ``FARM_ID``-style variables keep working.

An agent serves a site: the controllers of its houses, listed under ``controllers`` (each its own farm
id, name, unit id and optionally its own link), or the one controller of ``FARM_ID``/``MODBUS_URL`` —
a site of one. :meth:`AgentSettings.houses` gives each house's settings, the site's with its own
id, name, Modbus URL and MQTT identity, so that every part of the agent serves one house as before.
"""

from __future__ import annotations

import re
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from common.settings import ServiceSettings
from contract.topics import check_farm_id
from farm_agent.link import ModbusUrl, ModbusUrlError, url_with_unit


class ControllerSettings(BaseModel):
    """One house's controller: ``{id: house-1, name: "Птичник №1", unit: 1, url?: tcp://…, mqtt_password?: …}``."""

    model_config = ConfigDict(extra="forbid")

    id: str
    name: str | None = None
    unit: int = Field(ge=1, le=247)
    url: str | None = None  # its own link; default the site's ``modbus.url``
    location: str | None = None
    # the house's own MQTT identity (username = its id) on the site's broker; default the site's mqtt.url as is
    mqtt_password: str | None = Field(None, repr=False)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        return check_farm_id(value)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None:
            _check_modbus_url(value)
        return value

PHONE_NUMBER = re.compile(r"^\+?[0-9]{3,15}$")


class AgentSettings(ServiceSettings):
    ENV: ClassVar[dict[str, str]] = {
        "FARM_ID": "farm_id",
        "FARM_NAME": "farm_name",
        "OWNER_ID": "owner_id",
        "FARM_LOCATION": "location",
        "MODBUS_URL": "modbus_url",
        "POLL_INTERVAL": "poll_interval",
        "HEARTBEAT_INTERVAL": "heartbeat_interval",
        "MAX_INTERVAL": "max_interval",
        "QUEUE_MAX_READINGS": "queue_max_readings",
        "QUEUE_MAX_AGE": "queue_max_age",
        "QUEUE_MAX_MEMORY_READINGS": "queue_max_memory_readings",
        "REPLAY_RATE": "replay_rate",
        "CONFIRM_TIMEOUT": "confirm_timeout",
        "DEVICE_PROFILE": "profile",
        "HA_DISCOVERY": "ha_discovery",
        "HA_DISCOVERY_PREFIX": "ha_prefix",
        "HA_LANGUAGE": "ha_language",
        "HA_WEB_URL": "ha_web_url",
        "DISCOVERY_SERVICE_URL": "discovery_url",
        "TAILNET": "tailnet",
        "TAILSCALE_API_KEY": "tailscale_api_key",
        "SMS_DEVICE": "sms_device",
        "SMS_CONNECTION": "sms_connection",
        "SMS_NUMBERS": "sms_numbers",
        "SMS_AFTER": "sms_after",
        "SMS_MAX_PER_HOUR": "sms_max_per_hour",
        "SMS_LANGUAGE": "sms_language",
    }
    YAML: ClassVar[dict[str, str]] = {
        **ServiceSettings.YAML,
        "farm.id": "farm_id",
        "farm.name": "farm_name",
        "farm.owner_id": "owner_id",
        "farm.site": "site",
        "farm.location": "location",
        "farm.capabilities": "capabilities",
        "farm.api_port": "api_port",
        "modbus.url": "modbus_url",
        "modbus.poll_interval": "poll_interval",
        "modbus.max_interval": "max_interval",
        "buffer.max_readings": "queue_max_readings",
        "buffer.max_age": "queue_max_age",
        "buffer.max_memory_readings": "queue_max_memory_readings",
        "buffer.replay_rate": "replay_rate",
        "buffer.confirm_timeout": "confirm_timeout",
        "tailscale.tailnet": "tailnet",
        "tailscale.api_key": "tailscale_api_key",
        "discovery.service_url": "discovery_url",
        "discovery.heartbeat_interval": "heartbeat_interval",
        "homeassistant.discovery": "ha_discovery",
        "homeassistant.prefix": "ha_prefix",
        "homeassistant.language": "ha_language",
        "homeassistant.web_url": "ha_web_url",
        "sms.device": "sms_device",
        "sms.connection": "sms_connection",
        "sms.numbers": "sms_numbers",
        "sms.after": "sms_after",
        "sms.max_per_hour": "sms_max_per_hour",
        "sms.language": "sms_language",
    }

    farm_id: str | None = None  # a site of one; ``controllers`` lists the houses of a larger site
    farm_name: str | None = None
    site: str | None = None  # the site's name, published in every house's meta
    controllers: list[ControllerSettings] = Field(default_factory=list)
    owner_id: str | None = None
    location: str | None = None
    capabilities: list[str] = Field(default_factory=lambda: ["kub1063", "monitoring", "control"])
    api_host: str = "0.0.0.0"
    api_port: int = Field(8080, ge=0, le=65535)
    modbus_url: str = "tcp://127.0.0.1:502?unit=1"
    poll_interval: float = Field(5.0, ge=0.2, le=3600)
    heartbeat_interval: float = Field(60.0, ge=1, le=3600)  # within the web's 120 s of silence
    command_max_age: float = Field(60.0, gt=0)  # refuse commands issued longer ago than this (seconds)
    max_interval: float = Field(60.0, ge=0, le=86400)  # publish state at least this often; 0 = every poll
    # the on-disk backlog: room for 7 days of readings at 5 s polling, and readings no older than 7 days
    queue_max_readings: int = Field(7 * 24 * 3600 // 5, ge=1)
    queue_max_age: float = Field(7 * 24 * 3600.0, gt=0)  # seconds
    # while the data dir refuses writes (a full disk), unsent readings wait in memory, at most this many
    queue_max_memory_readings: int = Field(2000, ge=1)
    replay_rate: float = Field(100.0, ge=0)  # backlog readings per second after a reconnect; 0 = no cap
    replay_window: int = Field(10, ge=1, le=100)  # backlog readings in flight at once
    # send the unconfirmed readings again when the history has confirmed none of them for this long (seconds)
    confirm_timeout: float = Field(30.0, ge=1, le=86400)
    profile: str | None = None
    ha_discovery: bool = True
    ha_language: str = Field("ru", pattern="^(en|ru)$")  # every entity name in this one language
    # the web's base URL (https://farms.example.ts.net): Home Assistant links each farm device to its page there
    ha_web_url: str | None = Field(None, pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$")
    discovery_url: str | None = None
    tailnet: str | None = None
    tailscale_api_key: str | None = None
    # the farm's own SMS fallback (farm_agent/sms): a GSM modem's serial port; unset = no SMS
    sms_device: str | None = None
    sms_connection: str = Field("at", pattern=r"^at[0-9]*$")  # Gammu's: "at", or "at115200" for a bare module
    sms_numbers: list[str] = Field(default_factory=list, validate_default=True)
    sms_after: float = Field(300.0, gt=0, le=86400)  # seconds cut off before the farm texts
    sms_max_per_hour: int = Field(6, ge=1, le=60)
    sms_language: str = Field("ru", pattern="^(ru|en)$")
    sms_group_window: float = Field(20.0, ge=0, le=3600)  # seconds changes gather into one message
    sms_check_interval: float = Field(60.0, ge=0.5, le=3600)  # seconds between asking the modem how it is

    @field_validator("farm_id")
    @classmethod
    def _farm_id(cls, value: str | None) -> str | None:
        return None if value is None else check_farm_id(value)

    @field_validator("modbus_url")
    @classmethod
    def _modbus_url(cls, value: str) -> str:
        _check_modbus_url(value)
        return value

    @field_validator("sms_numbers", mode="before")
    @classmethod
    def _sms_numbers(cls, value: object, info: ValidationInfo) -> object:
        if isinstance(value, str):  # SMS_NUMBERS=+79001234567,+79007654321
            value = [part for part in (piece.strip() for piece in value.split(",")) if part]
        if isinstance(value, list):
            for number in value:
                if not isinstance(number, str) or not PHONE_NUMBER.fullmatch(number.replace(" ", "")):
                    raise ValueError(f"{number!r} is not a phone number (digits, with a leading + for international)")
            value = [number.replace(" ", "") for number in value]
            if info.data.get("sms_device") and not value:
                raise ValueError("sms.device is set but no number is given to text (sms.numbers / SMS_NUMBERS)")
        return value

    @model_validator(mode="after")
    def _houses(self) -> AgentSettings:
        if self.controllers and self.farm_id is not None:
            raise ValueError("give either farm.id (FARM_ID, one controller) or controllers (a site), not both")
        if not self.controllers and self.farm_id is None:
            raise ValueError("Field required: farm.id (FARM_ID), or a list of controllers")
        if self.sms_device and len(self.controllers) > 1:  # each house's extension would open the one modem
            raise ValueError("sms.device texts for one controller: a site of several houses cannot share the modem yet")
        ids = [controller.id for controller in self.controllers]
        if len(set(ids)) != len(ids):
            raise ValueError(f"controllers: each needs its own id, got {ids}")
        links: dict[tuple[str, int], str] = {}
        for controller in self.controllers:
            key = (ModbusUrl.parse(controller.url or self.modbus_url).link, controller.unit)
            if key in links:
                raise ValueError(f"controllers {links[key]} and {controller.id} have the same unit {controller.unit}"
                                 " on the same link")
            links[key] = controller.id
        if self.farm_id is not None and not self.farm_name:
            self.farm_name = self.farm_id
        return self

    def houses(self) -> list[AgentSettings]:
        """Each house's settings: the site's, with the house's id, name, Modbus URL and MQTT identity."""
        if not self.controllers:
            return [self]
        return [self._house(controller) for controller in self.controllers]

    def _house(self, controller: ControllerSettings) -> AgentSettings:
        url = url_with_unit(controller.url or self.modbus_url, controller.unit)
        mqtt_url = self.mqtt_url
        if controller.mqtt_password is not None:
            mqtt_url = str(self.mqtt().with_credentials(username=controller.id, password=controller.mqtt_password))
        return self.model_copy(update={
            "farm_id": controller.id, "farm_name": controller.name or controller.id, "modbus_url": url,
            "location": controller.location or self.location, "mqtt_url": mqtt_url, "controllers": [],
        })

    @property
    def house_id(self) -> str:
        """The farm id of a house's settings (from :meth:`houses`)."""
        assert self.farm_id is not None, "a site's settings name no house: use houses()"
        return self.farm_id


def _check_modbus_url(value: str) -> None:
    try:
        ModbusUrl.parse(value)
    except ModbusUrlError as exc:
        raise ValueError(str(exc)) from None

