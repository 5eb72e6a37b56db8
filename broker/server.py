"""The embedded MQTT broker: amqtt with kubmesh's authentication and topic ACL."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import ClassVar

from amqtt.broker import Broker
from pydantic import Field, field_validator, model_validator

from broker.amqtt_fixes import PromiseKeepingBroker
from broker.fastpath import FastPathBroker
from broker.plugins import IdentityAuthPlugin, TopicAclPlugin
from common.settings import ServiceSettings

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
    }
    YAML: ClassVar[dict[str, str]] = {
        **ServiceSettings.YAML,
        "mqtt.host": "mqtt_host",
        "mqtt.port": "mqtt_port",
        "mqtt.tls_port": "mqtt_tls_port",
        "mqtt.certfile": "tls_certfile",
        "mqtt.keyfile": "tls_keyfile",
        "mqtt.session_expiry": "session_expiry_s",
    }

    mqtt_host: str = "0.0.0.0"
    mqtt_port: int = 1883
    mqtt_tls_port: int = 8883
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    session_expiry_s: int = Field(default=7 * 86400, ge=0)  # an offline persistent session's life; 0: for ever

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


class KubBroker(FastPathBroker, PromiseKeepingBroker):
    """amqtt's broker with kubmesh's tuning (``broker.tuning``), its lean connections
    (``broker.fastpath``) and the MQTT promises amqtt breaks kept (``broker.amqtt_fixes``)."""


def broker_config(settings: BrokerSettings) -> dict[str, object]:
    store = {
        "data_dir": str(settings.data_dir.resolve()),
        "base_topic": settings.base_topic,
        "ha_prefix": settings.ha_prefix,
    }
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
        "plugins": {
            f"{IdentityAuthPlugin.__module__}.{IdentityAuthPlugin.__name__}": store,
            f"{TopicAclPlugin.__module__}.{TopicAclPlugin.__name__}": store,
        },
    }


async def start_broker(settings: BrokerSettings) -> KubBroker:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    broker = KubBroker(broker_config(settings))
    await broker.start()
    log.info("MQTT broker listening on %s:%s%s", settings.mqtt_host, settings.mqtt_port,
             f", TLS on port {settings.mqtt_tls_port}" if settings.tls else "")
    return broker


async def stop_broker(broker: Broker, seconds: float = SHUTDOWN_TIMEOUT_S) -> None:
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
