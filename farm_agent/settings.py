"""The farm agent's settings: the owner's ``farm_config.yaml`` and ``FARM_ID``-style variables keep working."""

from __future__ import annotations

import re
from typing import ClassVar

from pydantic import Field, ValidationInfo, field_validator, model_validator

from common.settings import ServiceSettings
from contract.topics import check_farm_id
from farm_agent.link import ModbusUrl, ModbusUrlError

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
        "DEVICE_PROFILE": "profile",
        "HA_DISCOVERY": "ha_discovery",
        "HA_DISCOVERY_PREFIX": "ha_prefix",
        "HA_LANGUAGE": "ha_language",
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
        "tailscale.tailnet": "tailnet",
        "tailscale.api_key": "tailscale_api_key",
        "discovery.service_url": "discovery_url",
        "discovery.heartbeat_interval": "heartbeat_interval",
        "homeassistant.discovery": "ha_discovery",
        "homeassistant.prefix": "ha_prefix",
        "homeassistant.language": "ha_language",
        "sms.device": "sms_device",
        "sms.connection": "sms_connection",
        "sms.numbers": "sms_numbers",
        "sms.after": "sms_after",
        "sms.max_per_hour": "sms_max_per_hour",
        "sms.language": "sms_language",
    }

    farm_id: str
    farm_name: str | None = None
    owner_id: str | None = None
    location: str | None = None
    capabilities: list[str] = Field(default_factory=lambda: ["kub1063", "monitoring", "control"])
    api_host: str = "0.0.0.0"
    api_port: int = Field(8080, ge=0, le=65535)
    modbus_url: str = "tcp://127.0.0.1:502?unit=1"
    poll_interval: float = Field(5.0, ge=0.2, le=3600)
    heartbeat_interval: float = Field(30.0, ge=1, le=3600)
    command_max_age: float = Field(60.0, gt=0)  # refuse commands issued longer ago than this (seconds)
    max_interval: float = Field(60.0, ge=0, le=86400)  # publish state at least this often; 0 = every poll
    # the on-disk backlog: room for 7 days of readings at 5 s polling, and readings no older than 7 days
    queue_max_readings: int = Field(7 * 24 * 3600 // 5, ge=1)
    queue_max_age: float = Field(7 * 24 * 3600.0, gt=0)  # seconds
    # while the data dir refuses writes (a full disk), unsent readings wait in memory, at most this many
    queue_max_memory_readings: int = Field(2000, ge=1)
    replay_rate: float = Field(100.0, ge=0)  # backlog readings per second after a reconnect; 0 = no cap
    replay_window: int = Field(10, ge=1, le=100)  # backlog readings in flight at once
    profile: str | None = None
    ha_discovery: bool = True
    ha_language: str = Field("en", pattern="^(en|ru)$")
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
    def _farm_id(cls, value: str) -> str:
        return check_farm_id(value)

    @field_validator("modbus_url")
    @classmethod
    def _modbus_url(cls, value: str) -> str:
        try:
            ModbusUrl.parse(value)
        except ModbusUrlError as exc:
            raise ValueError(str(exc)) from None
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
    def _name(self) -> AgentSettings:
        if not self.farm_name:
            self.farm_name = self.farm_id
        return self
