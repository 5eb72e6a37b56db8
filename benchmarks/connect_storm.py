"""A connect storm: N credentialed farms reconnecting at once after a broker restart, ours against Mosquitto.

N farms (one connection each, own credentials, ACL on) are connected; the broker is stopped and
started again on the same port. Every farm notices its connection close and reconnects at once,
retrying every 50 ms while nothing listens, then publishes a reading. The clock starts when the
new broker process is started; the figures are when the port opened, when the last farm was
connected again and when the last one's reading was acknowledged.

    python benchmarks/connect_storm.py [--farms 2000]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
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
    run_storm,
)

PIPE_TIMEOUT_S = 120.0


@dataclass
class StormResult:
    broker: str
    farms: int
    listening_s: float
    connected: int
    all_connected_s: float
    published: int
    all_published_s: float


def measure(broker: BrokerUnderTest) -> StormResult:
    with child_process(run_storm, broker.port, broker.farms) as pipe:
        _, connected, _ = receive(pipe, "fleet", PIPE_TIMEOUT_S)
        if connected != len(broker.farms):
            raise RuntimeError(f"{broker.name}: only {connected} of {len(broker.farms)} farms connected at first")
        broker.stop()
        started = time.monotonic_ns()
        broker.start_again()
        listening = time.monotonic_ns()
        pipe.send(started)
        _, reconnected, last_connect, published, last_publish, failures = receive(pipe, "fleet", PIPE_TIMEOUT_S)
        if failures:
            print(f"  {broker.name}: farms that did not come back: {failures}", file=sys.stderr)
        pipe.send("leave")
    return StormResult(broker.name, len(broker.farms), (listening - started) / 1e9, int(reconnected),
                       (int(last_connect) - started) / 1e9, int(published),
                       (int(last_publish) - started) / 1e9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--farms", type=int, default=2000)
    parser.add_argument("--brokers", nargs="+", choices=BROKERS, default=list(BROKERS))
    args = parser.parse_args()
    raise_open_files_limit()
    credentials = make_farms(args.farms)
    results = []
    for kind in args.brokers:
        with broker_under_test(kind, credentials) as broker:
            results.append(measure(broker))
    print(f"\n{args.farms} farms reconnecting at once after a broker restart (seconds from the new process's start)\n")
    print(f"{'broker':<10} {'listening':>10} {'publishing':>11} {'all connected':>14} {'all publishing':>15}")
    for r in results:
        print(f"{r.broker:<10} {r.listening_s:>9.2f}s {r.published:>5}/{r.farms:<5} {r.all_connected_s:>13.2f}s"
              f" {r.all_published_s:>14.2f}s")
    pair = {r.broker: r for r in results}
    if "embedded" in pair and "mosquitto" in pair:
        ours, peer = pair["embedded"], pair["mosquitto"]
        print(f"\nembedded/mosquitto: all publishing {ratio(ours.all_published_s, peer.all_published_s)};"
              f" after its port opened: {ours.all_published_s - ours.listening_s:.2f} s against"
              f" {peer.all_published_s - peer.listening_s:.2f} s")


if __name__ == "__main__":
    main()
