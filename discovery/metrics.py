"""Extension: ``GET /metrics`` of the discovery node, Prometheus text through prometheus_client.

Values are read when Prometheus scrapes (a custom collector), so nothing is updated on the hot path
except the readings counter of :class:`Metrics`; the one value on disk (the farms by presence) is read
on the registry's reader thread before the collector runs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from broker.server import KubBroker
from broker.stats import broker_stats
from contract.messages import FarmMessage, Message
from contract.topics import FarmTopic
from discovery.extension import Extension, Node
from discovery.history import HistoryRecorder
from discovery.presence import Presence
from discovery.tailnet import Tailnet


class Metrics(Extension):
    """Counts the readings (``state`` and ``backlog``) the node receives, per farm, and serves the collector."""

    name = "metrics"

    def __init__(self, node: Node) -> None:
        self.node = node  # its extensions, read at scrape time
        self.topics = node.topics
        self.readings: Counter[str] = Counter()
        self.farms: Counter[bool] | None = None  # farms by presence (online: True), read for each scrape
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(DiscoveryCollector(self, node.broker))

    @classmethod
    def build(cls, node: Node) -> Metrics:
        return cls(node)

    def filters(self) -> list[str]:
        return [self.topics.all_farms(FarmTopic.STATE), self.topics.all_farms(FarmTopic.BACKLOG)]

    async def on_message(self, message: Message) -> None:
        if isinstance(message, FarmMessage) and message.payload is not None and not message.retained:
            self.readings[message.farm_id] += 1  # a retained copy was counted when it was new

    async def scrape(self) -> bytes:
        """The Prometheus text of every metric, now."""
        presence = self.node.extensions.get(Presence)
        if presence is not None:
            self.farms = await presence.registry.db.read(presence.registry.presence)
        return generate_latest(self.registry)


class DiscoveryCollector(Collector):
    """What the node's extensions know, read at scrape time."""

    def __init__(self, metrics: Metrics, broker: KubBroker | None) -> None:
        self.metrics = metrics
        self.broker = broker

    def collect(self) -> Iterator[Metric]:
        extensions = self.metrics.node.extensions
        farms = self.metrics.farms
        if farms is not None:
            online = GaugeMetricFamily("kubmesh_farms", "Farms the discovery node knows, by presence",
                                       labels=["state"])
            online.add_metric(["online"], farms[True])
            online.add_metric(["offline"], farms[False])
            yield online
        readings = CounterMetricFamily("kubmesh_readings_received", "Readings received from farms", labels=["farm"])
        for farm_id, count in sorted(self.metrics.readings.items()):
            readings.add_metric([farm_id], count)
        yield readings
        yield CounterMetricFamily("kubmesh_messages_rejected", "Messages dropped as not of the contract",
                                  value=extensions.rejected)
        failures = CounterMetricFamily("kubmesh_extension_failures", "Calls of an extension that raised",
                                       labels=["extension"])
        for extension in extensions.all:
            failures.add_metric([extension.name], extensions.failures[extension.name])
        yield failures
        errors = CounterMetricFamily("kubmesh_database_write_errors", "Writes to a database that failed",
                                     labels=["database"])
        for database, count in sorted(extensions.write_errors().items()):
            errors.add_metric([database], count)
        yield errors
        if self.broker is not None:
            yield from broker_metrics(self.broker)
        tailnet = extensions.get(Tailnet)
        if tailnet is not None:
            yield from tailnet_metrics(tailnet)
        history = extensions.get(HistoryRecorder)
        if history is not None:
            yield GaugeMetricFamily("kubmesh_history_readings", "Readings kept in the history store",
                                    value=history.size())


def broker_metrics(broker: KubBroker) -> Iterator[Metric]:
    stats = broker_stats(broker)
    yield GaugeMetricFamily("kubmesh_broker_clients", "MQTT clients connected", value=stats.clients)
    yield CounterMetricFamily("kubmesh_broker_messages_received", "Messages published to the broker",
                              value=stats.messages_received)
    yield CounterMetricFamily("kubmesh_broker_acl_refusals", "Publishes, subscriptions and deliveries "
                              "the topic ACL refused", value=stats.acl_refusals)
    yield CounterMetricFamily("kubmesh_broker_offline_dropped", "Messages dropped for offline persistent "
                              "sessions that had their queue full", value=stats.offline_dropped)
    yield GaugeMetricFamily("kubmesh_broker_retained_messages", "Retained messages held", value=stats.retained)


def tailnet_metrics(tailnet: Tailnet) -> Iterator[Metric]:
    manager = tailnet.manager
    yield GaugeMetricFamily("kubmesh_tailnet_devices", "Tailnet devices as last synced", value=len(manager.records))
    flagged = GaugeMetricFamily("kubmesh_tailnet_farm_problems", "Farms' tailnet devices with a flag",
                                labels=["flag"])
    flag_counts = Counter(flag for d in manager.records if d["farm_id"] for flag in d["flags"])
    for flag, count in sorted(flag_counts.items()):
        flagged.add_metric([flag], count)
    yield flagged
    yield GaugeMetricFamily("kubmesh_tailnet_sync_failures", "Tailnet syncs failed in a row",
                            value=manager.failures)
