"""Publish-to-delivery latency of N farms publishing one QoS 1 reading a second: kubmesh's broker against Mosquitto.

Each farm is its own connection with its own credentials, confined by the ACL to its subtree
(``kubmesh broker`` with its identity store and rules; Mosquitto with the password file and ACL
that ``kubmesh broker export-mosquitto`` writes from the same identities and rules). Every farm
publishes a retained ``state`` once a second, spread evenly over the second; one subscriber on
``kub/farms/+/state`` acknowledges every delivery and measures the latency of each message sent
in the measuring window. Both brokers run in the same run on the same machine, one after the other.

    python benchmarks/fleet_latency.py [--farms 500 1000 2000 4000] [--seconds 20] [--warmup 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from array import array
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.mqtt_load import (
    BROKERS,
    BrokerUnderTest,
    broker_under_test,
    child_process,
    make_farms,
    percentile,
    raise_open_files_limit,
    ratio,
    receive,
    run_fleet,
    run_subscriber,
)

DRAIN_S = 3.0
PIPE_TIMEOUT_S = 120.0


@dataclass
class LatencyResult:
    broker: str
    farms: int
    connected: int
    connect_s: float
    sent: int
    delivered: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    cpu_percent: float
    rss_mb: float

    @property
    def delivered_share(self) -> float:
        return self.delivered / self.sent if self.sent else 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(broker: BrokerUnderTest, seconds: float, warmup: float) -> LatencyResult:
    with child_process(run_subscriber, broker.port, broker.reader) as sub_pipe:
        _, granted = receive(sub_pipe, "subscriber", PIPE_TIMEOUT_S)
        if granted not in (0, 1):
            raise RuntimeError(f"{broker.name} refused the subscription (code {granted})")
        with child_process(run_fleet, broker.port, broker.farms) as fleet_pipe:
            _, connected, failed, connect_s, errors = receive(fleet_pipe, "fleet", PIPE_TIMEOUT_S)
            if failed:
                print(f"  {broker.name}: {failed} farms could not connect, e.g. {errors}", file=sys.stderr)
            start = time.monotonic_ns() + int(warmup * 1e9)
            window = (start, start + int(seconds * 1e9))
            sub_pipe.send(window)
            fleet_pipe.send((window, window[1]))
            time.sleep(max(0.0, (start - time.monotonic_ns()) / 1e9))
            cpu_before = cpu_seconds(broker.process.pid)
            _, _sent, sent_in_window, _acked = receive(fleet_pipe, "fleet", PIPE_TIMEOUT_S + seconds)
            cpu = cpu_seconds(broker.process.pid) - cpu_before
            rss_mb = broker.rss_kb() / 1024
            time.sleep(DRAIN_S)
            sub_pipe.send("stop")
            _received, in_window, raw = receive(sub_pipe, "subscriber", PIPE_TIMEOUT_S)
            fleet_pipe.send("leave")
    latencies = array("q")
    latencies.frombytes(raw)
    ordered = sorted(latencies)
    return LatencyResult(
        broker.name, len(broker.farms), connected, connect_s, sent_in_window, in_window,
        percentile(ordered, 50) / 1000, percentile(ordered, 99) / 1000, (ordered[-1] if ordered else 0) / 1000,
        100 * cpu / (seconds + 1.0), rss_mb,
    )


def print_results(results: list[LatencyResult]) -> None:
    print(f"\n{'farms':>6} {'broker':<10} {'sent':>8} {'delivered':>10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
          f" {'CPU':>5} {'RSS MB':>7}")
    for r in results:
        print(f"{r.farms:>6} {r.broker:<10} {r.sent:>8} {100 * r.delivered_share:>9.2f}% {r.p50_ms:>8.1f}"
              f" {r.p99_ms:>8.1f} {r.max_ms:>8.1f} {r.cpu_percent:>4.0f}% {r.rss_mb:>7.1f}")
    print()
    by_size: dict[int, dict[str, LatencyResult]] = {}
    for r in results:
        by_size.setdefault(r.farms, {})[r.broker] = r
    for farms, pair in by_size.items():
        ours, peer = pair.get("embedded"), pair.get("mosquitto")
        if ours and peer:
            print(f"{farms} farms: embedded/mosquitto p99 {ratio(ours.p99_ms, peer.p99_ms)},"
                  f" p50 {ratio(ours.p50_ms, peer.p50_ms)},"
                  f" delivered {100 * ours.delivered / peer.delivered if peer.delivered else 0:.2f}% of mosquitto's")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--farms", type=int, nargs="+", default=[500, 1000, 2000, 4000])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the measuring window")
    parser.add_argument("--warmup", type=float, default=5.0, help="publishing before the window opens")
    parser.add_argument("--brokers", nargs="+", choices=BROKERS, default=list(BROKERS))
    args = parser.parse_args()
    raise_open_files_limit()
    print(f"{args.seconds:.0f} s window after {args.warmup:.0f} s of warm-up; QoS 1, retained, 1 msg/s per farm,"
          " one connection per farm with its own credentials, ACL on")
    results = []
    for farms in args.farms:
        credentials = make_farms(farms)
        for kind in args.brokers:
            with broker_under_test(kind, credentials) as broker:
                result = measure(broker, args.seconds, args.warmup)
            print(f"  {kind} with {farms} farms: {result.connected} connected in {result.connect_s:.1f} s,"
                  f" p99 {result.p99_ms:.1f} ms", flush=True)
            results.append(result)
    print_results(results)


if __name__ == "__main__":
    main()
