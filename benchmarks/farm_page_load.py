"""The discovery node's embedded broker while the farm page is read: p99 publish-to-delivery latency at N farms,
quiet and while ``GET /api/farms/{farm}`` of a farm with 30 days of history is requested 5 times a second.

``kubmesh discovery`` runs as in production (embedded broker, bus, history, REST API in one process), with
N farm identities and one farm whose history holds a reading every 5 s for 30 days. The fleet and the
subscriber of ``benchmarks/mqtt_load.py`` measure the broker's latency twice in the same run: without
requests to the REST API ("quiet", the peer), then with the farm endpoint requested at ``--rate`` per second
("loaded"). The farm endpoint counts the farm's gaps over its whole history, the most expensive read.

    python benchmarks/farm_page_load.py [--farms 2000] [--seconds 20] [--warmup 5] [--rate 5]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.fleet_latency import LatencyResult, measure
from benchmarks.mqtt_load import (
    REPO,
    BrokerUnderTest,
    _spawn,
    free_port,
    make_farms,
    percentile,
    raise_open_files_limit,
    ratio,
    wait_port,
)
from common.identities import Credentials, IdentityStore, Role, new_token
from discovery.registry import SCHEMA as REGISTRY_SCHEMA
from discovery.sqlite_history import SCHEMA as HISTORY_SCHEMA

HISTORY_FARM = "farm-history"
HISTORY_DAYS = 30
READING_EVERY_S = 5
VALUES = json.dumps({"temp_inside": 21.4, "humidity": 63.0, "co2": 812, "temp_outside": 7.9, "fan_speed": 40})


def seed_history(data: Path, now: float) -> int:
    """30 days of readings every 5 s for one farm, written straight into the node's databases."""
    count = HISTORY_DAYS * 86400 // READING_EVERY_S
    first = now - count * READING_EVERY_S
    with sqlite3.connect(data / "history.db") as db:
        db.executescript(HISTORY_SCHEMA)
        db.executemany("INSERT INTO readings (farm_id, seq, ts, data) VALUES (?, ?, ?, ?)",
                       ((HISTORY_FARM, seq, first + seq * READING_EVERY_S, VALUES) for seq in range(1, count + 1)))
    with sqlite3.connect(data / "discovery.db") as db:
        db.executescript(REGISTRY_SCHEMA)
        db.execute("INSERT INTO farms (farm_id, name, owner_id, online) VALUES (?, ?, ?, 1)",
                   (HISTORY_FARM, "History farm", "bench-owner"))
    return count


@contextmanager
def discovery_node(farms: list[Credentials], token: str) -> Iterator[tuple[BrokerUnderTest, int, int]]:
    """``python -m kubmesh discovery`` with its embedded broker, these farms and the seeded history farm."""
    with tempfile.TemporaryDirectory(prefix="kubmesh-bench-discovery-") as tmp:
        folder = Path(tmp)
        data = folder / "data"
        store = IdentityStore(data)
        store.add_many([(farm.username, Role.FARM, "bench-owner", farm.password) for farm in farms])
        reader = store.add("bench-reader", Role.DISCOVERY)
        readings = seed_history(data, time.time())
        mqtt_port, api_port = free_port(), free_port()
        command = [sys.executable, "-m", "kubmesh", "discovery", "--data-dir", str(data),
                   "--mqtt-host", "127.0.0.1", "--mqtt-port", str(mqtt_port), "--host", "127.0.0.1",
                   "--port", str(api_port), "--api-token", token, "--log-level", "WARNING"]
        process = _spawn(command, folder / "discovery.log")
        node = BrokerUnderTest("discovery", mqtt_port, process, folder, farms, reader, command)
        try:
            wait_port(mqtt_port, process)
            wait_port(api_port, process)
            yield node, api_port, readings
        finally:
            node.stop()


class FarmPageLoad:
    """A thread requesting the farm endpoint ``rate`` times a second; keeps each answer's time."""

    def __init__(self, api_port: int, token: str, rate: float) -> None:
        self.request = urllib.request.Request(f"http://127.0.0.1:{api_port}/api/farms/{HISTORY_FARM}",
                                              headers={"Authorization": f"Bearer {token}"})
        self.interval = 1 / rate
        self.latencies_us: list[int] = []
        self.failures = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def get_once(self) -> dict[str, object]:
        with urllib.request.urlopen(self.request, timeout=30) as answer:
            body: dict[str, object] = json.load(answer)
        return body

    def _run(self) -> None:
        due = time.monotonic()
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                self.get_once()
                self.latencies_us.append(int((time.monotonic() - started) * 1e6))
            except OSError:
                self.failures += 1
            due += self.interval
            self.stop.wait(max(0.0, due - time.monotonic()))

    def __enter__(self) -> FarmPageLoad:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--farms", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each measuring window")
    parser.add_argument("--warmup", type=float, default=5.0, help="publishing before each window opens")
    parser.add_argument("--rate", type=float, default=5.0, help="farm-page requests per second when loaded")
    args = parser.parse_args()
    raise_open_files_limit()
    token = new_token()
    print(f"code under test: {REPO}")
    with discovery_node(make_farms(args.farms), token) as (node, api_port, readings):
        load = FarmPageLoad(api_port, token, args.rate)
        history = load.get_once()["history"]
        print(f"{args.farms} farms, 1 QoS 1 reading a second each; {HISTORY_FARM} holds {readings} readings "
              f"({HISTORY_DAYS} days every {READING_EVERY_S} s): {history}")
        quiet = measure(node, args.seconds, args.warmup)
        print(f"  quiet: p99 {quiet.p99_ms:.1f} ms", flush=True)
        with load:
            loaded = measure(node, args.seconds, args.warmup)
        print(f"  loaded: p99 {loaded.p99_ms:.1f} ms", flush=True)
    page = sorted(load.latencies_us)
    print(f"\n{'':<8} {'sent':>8} {'delivered':>10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'CPU':>5}")
    for label, result in (("quiet", quiet), ("loaded", loaded)):
        print_row(label, result)
    print(f"\nfarm page at {args.rate:g}/s: {len(page)} answered, {load.failures} failed,"
          f" p50 {percentile(page, 50) / 1000:.0f} ms, p99 {percentile(page, 99) / 1000:.0f} ms")
    print(f"broker p99 loaded/quiet {ratio(loaded.p99_ms, quiet.p99_ms)}, p50 {ratio(loaded.p50_ms, quiet.p50_ms)}")


def print_row(label: str, r: LatencyResult) -> None:
    print(f"{label:<8} {r.sent:>8} {100 * r.delivered_share:>9.2f}% {r.p50_ms:>8.1f} {r.p99_ms:>8.1f}"
          f" {r.max_ms:>8.1f} {r.cpu_percent:>4.0f}%")


if __name__ == "__main__":
    main()
