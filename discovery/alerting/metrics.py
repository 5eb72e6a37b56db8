"""The alerting's figures for ``GET /metrics``: alerts by state and severity, deliveries by result, and
the channels whose last delivery failed. Read from memory when Prometheus scrapes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from discovery.alerting.service import AlertingService


class AlertingCollector(Collector):
    def __init__(self, service: AlertingService) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        alerts = GaugeMetricFamily("kubmesh_alerts", "Alerts not yet cleared", labels=["state", "severity"])
        counts = Counter((a.state, a.severity.value) for a in self.service.engine.alerts())
        for state in ("open", "acknowledged"):
            for severity in ("critical", "warning"):
                alerts.add_metric([state, severity], counts[state, severity])
        yield alerts
        dispatcher = self.service.dispatcher
        deliveries = CounterMetricFamily("kubmesh_alert_deliveries", "Messages sent through alert channels, "
                                         "each after its retries", labels=["result"])
        for result in ("ok", "failed"):
            deliveries.add_metric([result], dispatcher.delivered[result])
        yield deliveries
        failing = GaugeMetricFamily("kubmesh_alert_channel_failing", "1 while a channel's last delivery failed",
                                    labels=["user", "channel"])
        for (user, channel), ok in sorted(dispatcher.channel_ok.items()):
            failing.add_metric([user, channel], 0 if ok else 1)
        yield failing
