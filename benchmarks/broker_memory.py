"""Broker memory per connected farm, and after farms connect and leave again and again: ours against Mosquitto.

The broker's resident memory (RSS, from /proc) is read idle, with N credentialed farms connected
(each has published one retained ``state``, as agents do), and after every one of 10 cycles of all
N connecting and leaving. A broker that frees what a client held ends flat: the RSS after the
last cycle within 10 % of the RSS after the first (the retained readings stay, as they should).

    python benchmarks/broker_memory.py [--farms 2000] [--cycles 10]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.mqtt_load import (
    BROKERS,
    BrokerUnderTest,
    broker_under_test,
    child_process,
    make_farms,
    raise_open_files_limit,
    ratio,
    receive,
    run_cycles,
)

SETTLE_S = 3.0  # amqtt drops a closed session on its next monitor pass (every second)
PIPE_TIMEOUT_S = 180.0


@dataclass
class MemoryResult:
    broker: str
    farms: int
    idle_kb: int = 0
    connected_kb: list[int] = field(default_factory=list)
    left_kb: list[int] = field(default_factory=list)

    @property
    def per_farm_kb(self) -> float:
        return (self.connected_kb[0] - self.idle_kb) / self.farms

    @property
    def growth(self) -> float:
        """RSS after the last cycle against after the first."""
        return self.left_kb[-1] / self.left_kb[0] - 1


def settled_rss(broker: BrokerUnderTest) -> int:
    time.sleep(SETTLE_S)
    return broker.rss_kb()


def measure(broker: BrokerUnderTest, cycles: int) -> MemoryResult:
    result = MemoryResult(broker.name, len(broker.farms), idle_kb=settled_rss(broker))
    with child_process(run_cycles, broker.port, broker.farms, cycles) as pipe:
        for _ in range(cycles):
            _, connected, _connect_s = receive(pipe, "fleet", PIPE_TIMEOUT_S)
            if connected != len(broker.farms):
                print(f"  {broker.name}: only {connected} of {len(broker.farms)} farms connected", file=sys.stderr)
            result.connected_kb.append(settled_rss(broker))
            pipe.send("leave")
            receive(pipe, "fleet", PIPE_TIMEOUT_S)
            result.left_kb.append(settled_rss(broker))
            pipe.send("next")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--farms", type=int, default=2000)
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--brokers", nargs="+", choices=BROKERS, default=list(BROKERS))
    args = parser.parse_args()
    raise_open_files_limit()
    credentials = make_farms(args.farms)
    results = []
    for kind in args.brokers:
        with broker_under_test(kind, credentials) as broker:
            results.append(measure(broker, args.cycles))
    print(f"\n{args.farms} farms, {args.cycles} cycles of all connecting (one retained reading each) and leaving\n")
    print(f"{'broker':<10} {'idle MB':>8} {'connected MB':>13} {'KB/farm':>8} {'after 1st MB':>13}"
          f" {'after last MB':>14} {'growth':>7}")
    for r in results:
        print(f"{r.broker:<10} {r.idle_kb / 1024:>8.1f} {r.connected_kb[0] / 1024:>13.1f} {r.per_farm_kb:>8.1f}"
              f" {r.left_kb[0] / 1024:>13.1f} {r.left_kb[-1] / 1024:>14.1f} {100 * r.growth:>6.1f}%")
    for r in results:
        print(f"{r.broker} RSS after each cycle (MB): " + " ".join(f"{kb / 1024:.1f}" for kb in r.left_kb))
    pair = {r.broker: r for r in results}
    if "embedded" in pair and "mosquitto" in pair:
        ours, peer = pair["embedded"], pair["mosquitto"]
        print(f"\nembedded/mosquitto: memory per connected farm {ratio(ours.per_farm_kb, peer.per_farm_kb)},"
              f" RSS after the last cycle {ratio(ours.left_kb[-1], peer.left_kb[-1])}")


if __name__ == "__main__":
    main()
