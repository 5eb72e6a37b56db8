"""``kubmesh discovery`` composed: the embedded broker (unless MQTT_URL is set), the bus and its
plug-ins, the registry and the REST API."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from broker.server import start_broker, stop_broker
from common.identities import IdentityStore, Role
from common.mqtt import MqttUrl
from contract.payloads import utc_now
from contract.topics import Topics
from discovery.api import create_api
from discovery.audit import CommandAudit
from discovery.bus import DiscoveryBus, Plugin
from discovery.history import HistoryRecorder, Retention
from discovery.metrics import DiscoveryCollector, ReadingCounter, metrics_registry
from discovery.presence import PresencePlugin
from discovery.registry import Registry
from discovery.settings import DiscoverySettings
from discovery.tailscale.manager import build_manager, known_farms

log = logging.getLogger("kubmesh.discovery")


def _bus_url(settings: DiscoverySettings) -> MqttUrl:
    if not settings.embedded_broker:
        return settings.mqtt()
    # its own broker: a fresh service token every start, kept only in this process
    credentials = IdentityStore(settings.data_dir).ensure("discovery", Role.DISCOVERY)
    return MqttUrl(host="127.0.0.1", port=settings.mqtt_port).with_credentials(
        credentials.username, credentials.password
    )


async def run_discovery(settings: DiscoverySettings, stop: asyncio.Event) -> None:
    topics = Topics(settings.base_topic)
    broker = await start_broker(settings) if settings.embedded_broker else None
    registry = Registry(settings.database)
    audit = CommandAudit(settings.database.with_name("commands.db"), topics, utc_now)
    readings = ReadingCounter(topics)
    history = HistoryRecorder(settings.history_database, topics, utc_now, Retention(
        settings.history_raw_days, settings.history_rollup_seconds, settings.history_keep_days))
    plugins: list[Plugin] = [PresencePlugin(registry, topics, utc_now), audit, readings, history]
    bus = DiscoveryBus(_bus_url(settings), topics, plugins, settings.keepalive, settings.reconnect_max)
    identities = IdentityStore(settings.data_dir)
    tailnet = None
    if settings.tailscale_enabled:
        tailnet = build_manager(settings, lambda: known_farms(registry, identities), utc_now)

    def health() -> dict[str, Any]:
        report: dict[str, Any] = {"broker": "connected" if bus.connected else "disconnected",
                                  "embedded_broker": broker is not None}
        if tailnet is not None:
            report["tailnet"] = tailnet.health()
        return report

    if not settings.api_token:
        log.info("no static API token (API_TOKEN): /api accepts only tokens made by kubmesh token add")
    metrics = metrics_registry(DiscoveryCollector(registry, readings, broker, tailnet, history.size))
    api = create_api(registry, audit, settings.api_token, health, history, identities, metrics=metrics,
                     tailnet=tailnet)
    runner = web.AppRunner(api, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.api_host, settings.api_port).start()
    log.info("discovery REST API on http://%s:%s, MQTT %s", settings.api_host, settings.api_port,
             f"embedded on port {settings.mqtt_port}" if broker else settings.mqtt().redacted())
    try:
        if tailnet is None:
            await bus.run(stop)
        else:
            await asyncio.gather(bus.run(stop), tailnet.run(stop))
    finally:
        await runner.cleanup()
        if tailnet is not None:
            tailnet.store.close()
        registry.close()
        audit.close()
        history.close()
        if broker is not None:
            await stop_broker(broker)
