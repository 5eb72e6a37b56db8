"""Bytes a farm publishes per day: report by exception (deadbands, max_interval 60 s) against every poll.

The real agent polls the real simulator (its normal noise) through the embedded broker; a subscriber
counts every MQTT PUBLISH the farm sends (fixed header, topic, packet id and payload). Polls run
faster than in the field (--poll 0.2 s) so a few hundred take a minute: the simulator's noise is
drawn per read, so the share of polls worth publishing does not depend on the interval, and the
day's figure is computed for POLL_INTERVAL 5 (17,280 polls) with a heartbeat every 30 s (2,880).

    python benchmarks/agent_bytes.py [--polls 300] [--poll 0.2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.identities import IdentityStore, Role
from tests.farm_system import Agent, Simulator
from tests.helpers import MqttWatcher, ServiceProcess, free_port, wait_until

FARM = "farm-bench"
POLLS_PER_DAY = 86400 // 5
HEARTBEATS_PER_DAY = 86400 // 30


def publish_bytes(topic: str, payload: bytes) -> int:
    """A QoS 1 PUBLISH on the wire: fixed header with its remaining length, topic, packet id, payload."""
    remaining = 2 + len(topic.encode()) + 2 + len(payload)
    length_bytes = 1 if remaining < 128 else 2 if remaining < 16384 else 3
    return 1 + length_bytes + remaining


def measure(folder: Path, max_interval: float, polls: int, poll: float) -> dict[str, float]:
    data = folder / f"data-{max_interval}"
    store = IdentityStore(data)
    admin, farm = store.add("admin", Role.ADMIN), store.add(FARM, Role.FARM)
    port = free_port()
    broker = ServiceProcess(["broker", "--data-dir", str(data), "--mqtt-host", "127.0.0.1", "--mqtt-port", str(port)],
                            folder / f"broker-{max_interval}.log").wait_port(port)
    simulator = Simulator(folder).start()
    watcher = MqttWatcher(port, admin.username, admin.password, f"kub/farms/{FARM}/#")
    agent = Agent(folder, data, FARM, f"mqtt://{FARM}:{farm.password}@127.0.0.1:{port}", simulator.modbus_url,
                  poll_interval=poll, extra_env={"MAX_INTERVAL": str(max_interval), "HEARTBEAT_INTERVAL": "2"})
    try:
        agent.start()

        def polls_ok() -> int:
            heartbeat = watcher.last(f"kub/farms/{FARM}/heartbeat")
            return int(heartbeat["polls_ok"]) if heartbeat else 0

        wait_until(lambda: polls_ok() > 5, 30, what="the agent polling")
        with watcher.lock:
            start = len(watcher.messages)
        first = polls_ok()
        wait_until(lambda: polls_ok() >= first + polls, polls * poll * 3 + 30, interval=0.2, what=f"{polls} polls")
        counted = polls_ok() - first
        with watcher.lock:
            window = watcher.messages[start:]
        by_kind: dict[str, int] = {}
        heartbeat_size = 0
        for topic, payload, _ in window:
            kind = topic.rsplit("/", 1)[-1]
            size = publish_bytes(topic, payload)
            if kind == "heartbeat":
                heartbeat_size = size
            else:
                by_kind[kind] = by_kind.get(kind, 0) + size
        states = sum(1 for topic, _, _ in window if topic.endswith("/state"))
        per_poll = sum(by_kind.values()) / counted
        return {
            "polls": counted,
            "states": states,
            "state_share": states / counted,
            "per_poll": per_poll,
            "per_day": per_poll * POLLS_PER_DAY + heartbeat_size * HEARTBEATS_PER_DAY,
        }
    finally:
        watcher.close()
        agent.stop()
        simulator.stop()
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--polls", type=int, default=300)
    parser.add_argument("--poll", type=float, default=0.2)
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as folder:
        every_poll = measure(Path(folder), 0, args.polls, args.poll)
        by_exception = measure(Path(folder), 60, args.polls, args.poll)
    print("Bytes a farm publishes (MQTT PUBLISH bytes on the wire), POLL_INTERVAL 5, heartbeat every 30 s\n")
    print(f"{'mode':<36} {'polls':>6} {'states sent':>12} {'bytes/poll':>11} {'MB/day':>8}")
    for name, result in (("every poll", every_poll), ("report by exception (deadbands)", by_exception)):
        print(f"{name:<36} {result['polls']:>6.0f} {result['state_share']:>11.0%} {result['per_poll']:>11.0f}"
              f" {result['per_day'] / 1e6:>8.2f}")
    print(f"\nreport by exception sends {every_poll['per_day'] / by_exception['per_day']:.1f}x fewer bytes a day"
          f" ({time.monotonic() - started:.0f} s to measure)")


if __name__ == "__main__":
    main()
