"""The embedded MQTT broker: amqtt with kubmesh's authentication and topic ACL."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from amqtt.broker import Broker, BrokerProtocolHandler
from amqtt.contexts import Action
from amqtt.session import Session
from pydantic import field_validator, model_validator

from broker.amqtt_fixes import PromiseKeepingBroker, retained_qos
from broker.plugins import IdentityAuthPlugin, TopicAclPlugin
from broker.tuning import TunedBroker
from kubmesh.settings import ServiceSettings

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
    }
    YAML: ClassVar[dict[str, str]] = {
        **ServiceSettings.YAML,
        "mqtt.host": "mqtt_host",
        "mqtt.port": "mqtt_port",
        "mqtt.tls_port": "mqtt_tls_port",
        "mqtt.certfile": "tls_certfile",
        "mqtt.keyfile": "tls_keyfile",
    }

    mqtt_host: str = "0.0.0.0"
    mqtt_port: int = 1883
    mqtt_tls_port: int = 8883
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None

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


class _Subscriptions(dict[str, list[tuple[Session, int]]]):
    """amqtt's subscription table, walked over a snapshot.

    amqtt 0.12.1 walks the table across awaits (the ACL check of every
    delivery, retained messages on connect), so a client subscribing or
    leaving meanwhile raised "dictionary changed size during iteration": the
    message was lost for every subscriber not yet served.
    """

    def __iter__(self) -> Iterator[str]:
        return iter(list(self.keys()))

    def items(self) -> list[tuple[str, list[tuple[Session, int]]]]:  # type: ignore[override]
        return [(topic, list(subscribers)) for topic, subscribers in super().items()]


class KubBroker(PromiseKeepingBroker, TunedBroker):
    """amqtt's broker, with retained messages delivered only as MQTT says.

    amqtt 0.12.1 checks the RECEIVE permission for live deliveries but sends
    retained messages to any subscription that matches, so a viewer of one
    owner subscribing to ``kub/#`` would read every farm's retained state; and
    on connect it walks every client's subscription filters, sending a new
    client retained messages for filters it never subscribed to. Its
    subscription table is walked over snapshots (:class:`_Subscriptions`), and
    a client's last messages are delivered even when it disconnects at once.
    """

    def __init__(self, config: dict[str, object]) -> None:
        super().__init__(config)
        self._subscriptions = _Subscriptions(self._subscriptions)  # type: ignore[has-type]
        self.messages_received = 0  # every PUBLISH a client sent, for /metrics

    async def _handle_disconnect(
        self, client_session: Session, handler: BrokerProtocolHandler, disconnect_waiter: asyncio.Future[Any]
    ) -> None:
        """Deliver what the client published before it left, then end its session.

        amqtt acknowledges a PUBLISH when it queues it and clears the queue when
        the client disconnects, so ``mosquitto_pub -q 1`` to a busy broker could
        lose a command the broker had already acknowledged.
        """
        queue = client_session.delivered_message_queue
        while not queue.empty():
            received: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            received.set_result(queue.get_nowait())
            if not await self._handle_message_delivery(client_session, handler, received):
                break
        await super()._handle_disconnect(client_session, handler, disconnect_waiter)

    async def _handle_message_delivery(
        self, client_session: Session, handler: BrokerProtocolHandler, wait_deliver: asyncio.Future[Any]
    ) -> bool:
        # counted here rather than by a plug-in on broker_message_received, which costs a task per message
        self.messages_received += 1
        return await super()._handle_message_delivery(client_session, handler, wait_deliver)

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        topic_filter, qos = subscription
        handler = self._get_handler(session)
        if handler is None:
            return
        subscribers = self._subscriptions.get(topic_filter, [])
        granted = [sub_qos for subscriber, sub_qos in subscribers if subscriber.client_id == session.client_id]
        if not granted:
            return
        qos = granted[0]  # on connect amqtt passes QoS 0 for a persistent session's filters
        tasks = []
        for topic, retained in list(self._retained_messages.items()):
            if not self._matches(topic, topic_filter):
                continue
            if not await self._topic_filtering(session, topic=topic, action=Action.RECEIVE):
                continue
            tasks.append(
                asyncio.ensure_future(
                    handler.mqtt_publish(retained.topic, retained.data, retained_qos(qos, retained.qos), retain=True)
                )
            )
        if tasks:
            await asyncio.wait(tasks)


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
