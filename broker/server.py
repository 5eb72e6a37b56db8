"""The embedded MQTT broker's settings, and starting and stopping it (``broker.core.KubBroker``)."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import ClassVar

from pydantic import Field, field_validator, model_validator

from broker.core import DEFAULT_MAX_PACKET, KubBroker, Limits
from common.identities import IdentityStore
from common.settings import ServiceSettings
from contract.payloads import MAX_PAYLOAD_BYTES
from contract.topics import Topics

__all__ = ["BrokerSettings", "KubBroker", "broker_config", "make_broker", "run_broker", "start_broker", "stop_broker"]

log = logging.getLogger("kubmesh.broker")
SHUTDOWN_TIMEOUT_S = 3.0


class BrokerSettings(ServiceSettings):
    """The embedded broker's listeners; identities come from ``data_dir``."""

    ENV: ClassVar[dict[str, str]] = {
        "MQTT_HOST": "mqtt_host",
        "MQTT_PORT": "mqtt_port",
        "MQTT_TLS_PORT": "mqtt_tls_port",
        "MQTT_TLS_CERTFILE": "tls_certfile",
        "MQTT_TLS_KEYFILE": "tls_keyfile",
        "MQTT_SESSION_EXPIRY": "session_expiry_s",
        "MQTT_MAX_PACKET_SIZE": "max_packet_bytes",
        "MQTT_LOGIN_DELAY_MAX": "login_delay_max_s",
    }
    YAML: ClassVar[dict[str, str]] = {
        **ServiceSettings.YAML,
        "mqtt.host": "mqtt_host",
        "mqtt.port": "mqtt_port",
        "mqtt.tls_port": "mqtt_tls_port",
        "mqtt.certfile": "tls_certfile",
        "mqtt.keyfile": "tls_keyfile",
        "mqtt.session_expiry": "session_expiry_s",
        "mqtt.max_packet_size": "max_packet_bytes",
        "mqtt.login_delay_max": "login_delay_max_s",
    }

    mqtt_host: str = "0.0.0.0"
    mqtt_port: int = 1883
    mqtt_tls_port: int = 8883
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    session_expiry_s: int = Field(default=7 * 86400, ge=0)  # an offline persistent session's life; 0: for ever
    # a packet's remaining length; a payload model's largest payload must still fit
    max_packet_bytes: int = Field(default=DEFAULT_MAX_PACKET, gt=MAX_PAYLOAD_BYTES, le=268_435_455)
    login_delay_max_s: float = Field(default=30.0, ge=0)  # the longest wait of a login throttled by failures

    @field_validator("tls_certfile", "tls_keyfile")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        if value is not None and not os.access(value, os.R_OK):
            raise ValueError(f"cannot read {value}")
        return value

    @model_validator(mode="after")
    def _cert_with_key(self) -> BrokerSettings:
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("the TLS listener needs both a certificate (tls_certfile) and its key (tls_keyfile)")
        return self

    @property
    def tls(self) -> bool:
        return self.tls_certfile is not None and self.tls_keyfile is not None


def broker_config(settings: BrokerSettings) -> dict[str, object]:
    """amqtt's configuration: the listeners and session expiry."""
    listeners: dict[str, dict[str, object]] = {
        "default": {"type": "tcp", "bind": f"{settings.mqtt_host}:{settings.mqtt_port}"},
    }
    if settings.tls:
        listeners["tls"] = {
            "type": "tcp",
            "bind": f"{settings.mqtt_host}:{settings.mqtt_tls_port}",
            "ssl": True,
            "certfile": str(settings.tls_certfile),
            "keyfile": str(settings.tls_keyfile),
        }
    return {
        "listeners": listeners,
        "session_expiry_interval": settings.session_expiry_s or None,
    }


def make_broker(settings: BrokerSettings) -> KubBroker:
    limits = Limits(max_packet_bytes=settings.max_packet_bytes, login_delay_max_s=settings.login_delay_max_s)
    return KubBroker(broker_config(settings), IdentityStore(settings.data_dir.resolve()), Topics(settings.base_topic),
                     settings.ha_prefix, limits)


async def start_broker(settings: BrokerSettings) -> KubBroker:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    broker = make_broker(settings)
    await broker.start()
    log.info("MQTT broker listening on %s:%s%s", settings.mqtt_host, settings.mqtt_port,
             f", TLS on port {settings.mqtt_tls_port}" if settings.tls else "")
    return broker


async def stop_broker(broker: KubBroker, seconds: float = SHUTDOWN_TIMEOUT_S) -> None:
    """amqtt's shutdown waits for in-flight QoS 1 deliveries, which a lost PUBACK keeps open forever."""
    try:
        await asyncio.wait_for(broker.shutdown(), seconds)
    except TimeoutError:
        log.warning("broker did not shut down cleanly within %.0f s; closing anyway", seconds)


async def run_broker(settings: BrokerSettings, stop: asyncio.Event) -> None:
    broker = await start_broker(settings)
    try:
        await stop.wait()
    finally:
        await stop_broker(broker)
