"""``GET /metrics`` of a farm agent: polls, Modbus errors and latency, backlog, broker link."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from farm_agent.agent import FarmAgent

POLL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class AgentCollector(Collector):
    def __init__(self, agent: FarmAgent) -> None:
        self.agent = agent

    def collect(self) -> Iterator[Metric]:
        agent, state = self.agent, self.agent.state
        labels = [agent.farm_id]
        polls = CounterMetricFamily("kubmesh_agent_polls", "Controller polls", labels=["farm", "result"])
        polls.add_metric([*labels, "ok"], state.polls_ok)
        polls.add_metric([*labels, "failed"], state.polls_failed)
        yield polls
        counters = agent.poller.link.counters
        yield _one(CounterMetricFamily, "kubmesh_modbus_transactions", "Modbus requests sent", labels,
                   counters.transactions)
        yield _one(CounterMetricFamily, "kubmesh_modbus_errors", "Modbus requests that failed (timeout, "
                   "exception, link down)", labels, counters.failures)
        yield _one(GaugeMetricFamily, "kubmesh_modbus_up", "1 while the controller answers", labels,
                   int(state.modbus_ok))
        yield _one(GaugeMetricFamily, "kubmesh_mqtt_connected", "1 while the broker session is up", labels,
                   int(state.mqtt_connected))
        yield _one(GaugeMetricFamily, "kubmesh_backlog_readings", "Readings waiting to be sent", labels,
                   len(agent.queue))
        yield _one(CounterMetricFamily, "kubmesh_published_bytes", "Bytes published to the broker", labels,
                   state.bytes_published)
        if state.reading is not None:
            yield _one(GaugeMetricFamily, "kubmesh_reading_seq", "seq of the newest reading", labels,
                       state.reading.seq)


def _one(family: type[GaugeMetricFamily] | type[CounterMetricFamily], name: str, doc: str, labels: list[str],
         value: float) -> Metric:
    metric = family(name, doc, labels=["farm"])
    metric.add_metric(labels, value)
    return metric


def agent_metrics(agent: FarmAgent) -> CollectorRegistry:
    """A registry of the agent's collector and a poll-duration histogram the agent feeds."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(agent))
    poll_seconds = Histogram("kubmesh_modbus_poll_seconds", "Time one poll of the controller took",
                             ["farm"], buckets=POLL_BUCKETS, registry=registry)
    agent.on_poll_timed = poll_seconds.labels(agent.farm_id).observe
    return registry
