"""``GET /metrics`` of a farm agent, in Prometheus' text format: polls, Modbus errors and latency, backlog, broker link.

The exposition is written here rather than with prometheus_client: a handful of counters, gauges and
one histogram do not need the library's registry, and the agent's box has little memory to spare.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping

from farm_agent.agent import FarmAgent
from farm_agent.extension import Extension, Polled
from farm_agent.http_server import Response, Route

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
POLL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value


class Metrics(Extension):
    name = "metrics"

    def __init__(self, agent: FarmAgent) -> None:
        super().__init__(agent)
        self.poll_seconds = Histogram(POLL_BUCKETS)

    def routes(self) -> Mapping[str, Route]:
        return {"/metrics": self._scrape}

    async def on_poll(self, poll: Polled) -> None:
        self.poll_seconds.observe(poll.seconds)

    async def _scrape(self) -> Response:
        return Response(200, self.exposition().encode(), CONTENT_TYPE)

    def exposition(self) -> str:
        agent, state = self.agent, self.agent.state
        farm = f'farm="{_escape(agent.farm_id)}"'
        counters = agent.poller.link.counters
        lines = _family("kubmesh_agent_polls_total", "counter", "Controller polls")
        lines += [f'kubmesh_agent_polls_total{{{farm},result="ok"}} {float(state.polls_ok)}',
                  f'kubmesh_agent_polls_total{{{farm},result="failed"}} {float(state.polls_failed)}']
        for name, kind, doc, value in (
            ("kubmesh_modbus_transactions_total", "counter", "Modbus requests sent", counters.transactions),
            ("kubmesh_modbus_errors_total", "counter", "Modbus requests that failed (timeout, exception, link down)",
             counters.failures),
            ("kubmesh_modbus_up", "gauge", "1 while the controller answers", int(state.modbus_ok)),
            ("kubmesh_mqtt_connected", "gauge", "1 while the broker session is up", int(state.mqtt_connected)),
            ("kubmesh_backlog_readings", "gauge", "Readings waiting to be sent", len(agent.queue)),
            ("kubmesh_published_bytes_total", "counter", "Bytes published to the broker",
             agent.publisher.bytes_published),
            ("kubmesh_storage_ok", "gauge", "1 while the data dir takes writes", int(state.storage_error is None)),
            ("kubmesh_extension_failures_total", "counter", "Extension handlers that raised",
             agent.extensions.failures),
        ):
            lines += [*_family(name, kind, doc), f"{name}{{{farm}}} {float(value)}"]
        if state.reading is not None:
            lines += [*_family("kubmesh_reading_seq", "gauge", "seq of the newest reading"),
                      f"kubmesh_reading_seq{{{farm}}} {float(state.reading.seq)}"]
        histogram, name = self.poll_seconds, "kubmesh_modbus_poll_seconds"
        lines += _family(name, "histogram", "Time one poll of the controller took")
        total = 0
        for bound, count in zip((*histogram.buckets, "+Inf"), histogram.counts, strict=True):
            total += count
            lines.append(f'{name}_bucket{{{farm},le="{bound}"}} {float(total)}')
        lines += [f"{name}_count{{{farm}}} {float(total)}", f"{name}_sum{{{farm}}} {histogram.sum!r}"]
        return "\n".join(lines) + "\n"


def _family(name: str, kind: str, doc: str) -> list[str]:
    return [f"# HELP {name} {doc}", f"# TYPE {name} {kind}"]


def _escape(label: str) -> str:
    return label.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
