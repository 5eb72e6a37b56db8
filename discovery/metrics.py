"""``GET /metrics`` of the discovery node: Prometheus text through prometheus_client.

Values are read when Prometheus scrapes (a custom collector), so nothing is
updated on the hot path except the readings counter of the bus plug-in.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from broker.server import KubBroker
from broker.stats import broker_stats
from contract.topics import FarmTopic, InvalidTopic, Topics
from discovery.registry import Registry
from discovery.tailscale.manager import TailscaleManager


class ReadingCounter:
    """Bus plug-in: counts the readings (``state`` and ``backlog``) the node receives, per farm."""

    def __init__(self, topics: Topics) -> None:
        self.topics = topics
        self.readings: Counter[str] = Counter()

    def subscriptions(self) -> list[str]:
        return [self.topics.all_farms(FarmTopic.STATE), self.topics.all_farms(FarmTopic.BACKLOG)]

    async def on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        if not payload or retained:
            return  # a clear, or a reading counted when it was new
        try:
            self.readings[self.topics.parse(topic).farm_id] += 1
        except InvalidTopic:
            return


class DiscoveryCollector(Collector):
    def __init__(
        self,
        registry: Registry,
        readings: ReadingCounter,
        broker: KubBroker | None = None,
        tailnet: TailscaleManager | None = None,
        history_size: Callable[[], int] | None = None,
    ) -> None:
        self.registry = registry
        self.readings = readings
        self.broker = broker
        self.tailnet = tailnet
        # a callable giving the number of readings in the history store
        self.history_size = history_size

    def collect(self) -> Iterator[Metric]:
        farms = self.registry.farms()
        online = GaugeMetricFamily("kubmesh_farms", "Farms the discovery node knows, by presence", labels=["state"])
        online.add_metric(["online"], sum(1 for f in farms if f["online"]))
        online.add_metric(["offline"], sum(1 for f in farms if not f["online"]))
        yield online
        readings = CounterMetricFamily("kubmesh_readings_received", "Readings received from farms", labels=["farm"])
        for farm_id, count in sorted(self.readings.readings.items()):
            readings.add_metric([farm_id], count)
        yield readings
        if self.broker is not None:
            stats = broker_stats(self.broker)
            yield GaugeMetricFamily("kubmesh_broker_clients", "MQTT clients connected", value=stats.clients)
            yield CounterMetricFamily("kubmesh_broker_messages_received", "Messages published to the broker",
                                      value=stats.messages_received)
            yield CounterMetricFamily("kubmesh_broker_acl_refusals", "Publishes, subscriptions and deliveries "
                                      "the topic ACL refused", value=stats.acl_refusals)
            yield CounterMetricFamily("kubmesh_broker_offline_dropped", "Messages dropped for offline persistent "
                                      "sessions that had their queue full", value=stats.offline_dropped)
            yield GaugeMetricFamily("kubmesh_broker_retained_messages", "Retained messages held",
                                    value=stats.retained)
        if self.tailnet is not None:
            devices = self.tailnet.store.devices()
            yield GaugeMetricFamily("kubmesh_tailnet_devices", "Tailnet devices as last synced", value=len(devices))
            flagged = GaugeMetricFamily("kubmesh_tailnet_farm_problems", "Farms' tailnet devices with a flag",
                                        labels=["flag"])
            flag_counts = Counter(flag for d in devices if d["farm_id"] for flag in d["flags"])
            for flag, count in sorted(flag_counts.items()):
                flagged.add_metric([flag], count)
            yield flagged
            yield GaugeMetricFamily("kubmesh_tailnet_sync_failures", "Tailnet syncs failed in a row",
                                    value=self.tailnet.failures)
        if self.history_size is not None:
            yield GaugeMetricFamily("kubmesh_history_readings", "Readings kept in the history store",
                                    value=self.history_size())


def metrics_registry(collector: Collector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
