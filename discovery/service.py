"""``kubmesh discovery`` composed: the embedded broker (unless MQTT_URL is set), the bus and its extensions,
and the REST API.

A feature of the node is an extension (:mod:`discovery.extension`): one module, and one line in
:data:`EXTENSIONS`. They are started in this order, before the bus connects, and stopped in reverse.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from broker.server import start_broker, stop_broker
from common.identities import IdentityStore, Role
from common.mqtt import MqttUrl
from contract.payloads import utc_now
from contract.topics import Topics
from discovery.alerting.api import add_alert_routes
from discovery.alerting.extension import Alerting
from discovery.api import create_api
from discovery.audit import CommandAudit
from discovery.bus import DiscoveryBus
from discovery.confirmation import Confirmation
from discovery.extension import Extension, Extensions, Node
from discovery.history import HistoryRecorder
from discovery.metrics import Metrics
from discovery.presence import Presence
from discovery.settings import DiscoverySettings
from discovery.storage import open_storage
from discovery.tailnet import Tailnet

log = logging.getLogger("kubmesh.discovery")

# each builds its extension from the node, or None when the settings switch it off
EXTENSIONS: list[Callable[[Node], Extension | None]] = [
    Presence.build,
    HistoryRecorder.build,
    Confirmation.build,  # after the history: it publishes what the history's commit stored
    CommandAudit.build,
    Metrics.build,
    Tailnet.build,
    Alerting.build,
]


def _bus_url(settings: DiscoverySettings) -> MqttUrl:
    if not settings.embedded_broker:
        return settings.mqtt()
    # its own broker: a fresh service token every start, kept only in this process
    credentials = IdentityStore(settings.data_dir).ensure("discovery", Role.DISCOVERY)
    return MqttUrl(host="127.0.0.1", port=settings.mqtt_port).with_credentials(
        credentials.username, credentials.password
    )


def build_extensions(node: Node) -> Extensions:
    built = [extension for build in EXTENSIONS if (extension := build(node)) is not None]
    node.extensions = Extensions(built)
    return node.extensions


async def run_discovery(settings: DiscoverySettings, stop: asyncio.Event) -> None:
    topics = Topics(settings.base_topic)
    broker = await start_broker(settings) if settings.embedded_broker else None
    identities = IdentityStore(settings.data_dir)
    storage = open_storage(settings)
    await asyncio.to_thread(storage.open)  # PostgreSQL: connect, migrate the schema
    lease = storage.lease(settings.lease_interval)
    node = Node(settings, topics, utc_now, identities, broker, storage=storage, lease=lease)
    extensions = build_extensions(node)
    bus = DiscoveryBus(_bus_url(settings), topics, extensions, settings.keepalive, settings.reconnect_max,
                       settings.node_name)
    node.publish = bus.publish
    presence, history = extensions.get(Presence), extensions.get(HistoryRecorder)
    audit, metrics, tailnet = extensions.get(CommandAudit), extensions.get(Metrics), extensions.get(Tailnet)
    alerting = extensions.get(Alerting)
    if presence is None or history is None or audit is None:
        raise RuntimeError("the REST API needs the presence, history and audit extensions in EXTENSIONS")

    def health() -> dict[str, Any]:
        report: dict[str, Any] = {"broker": "connected" if bus.connected else "disconnected",
                                  "embedded_broker": broker is not None,
                                  "extensions": {"failures": dict(extensions.failures),
                                                 "rejected_messages": extensions.rejected},
                                  "database_write_errors": extensions.write_errors(),
                                  "storage": {"backend": storage.kind, "node": settings.node_name,
                                              "lease": lease.health()}}
        if tailnet is not None:
            report["tailnet"] = tailnet.manager.health()
        if alerting is not None:
            report["alerting"] = alerting.service.health()
        return report

    if not settings.api_token:
        log.info("no static API token (API_TOKEN): /api accepts only tokens made by kubmesh token add")
    lease_stop = asyncio.Event()
    lease_task = asyncio.create_task(lease.run(lease_stop))
    await extensions.start()
    api = create_api(presence.registry, audit, settings.api_token, health, history, identities,
                     metrics=metrics.scrape if metrics else None, tailnet=tailnet.manager if tailnet else None)
    if alerting is not None:
        add_alert_routes(api, alerting.service)
    runner = web.AppRunner(api, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.api_host, settings.api_port).start()
        log.info("discovery REST API on http://%s:%s, MQTT %s", settings.api_host, settings.api_port,
                 f"embedded on port {settings.mqtt_port}" if broker else settings.mqtt().redacted())
        await bus.run(stop)
    finally:
        await runner.cleanup()
        await extensions.stop()
        lease_stop.set()
        await lease_task
        await asyncio.to_thread(storage.close)
        if broker is not None:
            await stop_broker(broker)
