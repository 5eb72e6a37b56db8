"""Replaying a long backlog: how fast it reaches the history, and whether live readings keep their pace.

The agent's on-disk queue is filled with a day of readings at POLL_INTERVAL 5 (17,280, each with
every value of the KUB-1063 profile; ``--backlog 120960`` for 7 days), as a farm offline for that
long would have it. Then the real agent starts against a real simulator, polling every ``--poll`` s
and publishing every poll live, and replays the queue on ``backlog`` through the broker to a real
discovery node, which stores it. Measured: the replay rate (readings per second, from the first to
the last backlog message seen on the bus), the time from the agent's connect until the history holds
every reading and has confirmed it (the agent's queue is empty), the history's confirmations
(``kub/discovery/committed/{farm}``) sent meanwhile, and the intervals between live ``state``
messages during the replay. Run once through the embedded broker and once through Mosquitto, the
peer (with ``set_tcp_nodelay true``: without it Nagle's algorithm holds back its PUBACKs, and a
window of QoS 1 messages crawls; and ``max_queued_messages 0``: its default of 1000 drops QoS 1
messages for a subscriber that lags).

``--replay-rate 0`` (the default here) lifts the agent's cap (REPLAY_RATE, 100 per second by
default) to measure what the path can carry; pass the agent's default to see the capped replay.

    python benchmarks/backlog_replay.py [--backlog 17280] [--poll 1] [--replay-rate 0]
"""

from __future__ import annotations

import argparse
import itertools
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.identities import IdentityStore, Role
from contract.payloads import Reading, encode, utc_now
from farm_agent.profile import load_profile
from farm_agent.queue import SEQ, ReadingQueue
from farm_agent.store import AgentStore
from tests.farm_system import Agent, Simulator
from tests.helpers import ServiceProcess, free_port, port_open, wait_until
from tests.test_discovery import start_discovery

FARM = "farm-bench"
DAY_AT_5_S = 86400 // 5
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


@dataclass
class Timeline:
    """Arrival times of a farm's messages, seen by a subscriber on the broker."""

    online_at: float | None = None
    marks: int = 0  # the history's confirmations to the farm
    backlog: list[float] = field(default_factory=list)
    state: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        now = time.monotonic()
        kind = msg.topic.rsplit("/", 1)[-1]
        with self.lock:
            if kind == "backlog":
                self.backlog.append(now)
            elif msg.topic.startswith("kub/discovery/committed/"):
                self.marks += 1
            elif kind == "state" and not msg.retain:
                self.state.append(now)
            elif kind == "status" and b'"online"' in msg.payload and self.online_at is None:
                self.online_at = now


def fill_queue(data_dir: Path, count: int) -> None:
    """An outage: ``count`` readings 5 s apart, ending now, numbered 1..count, all unsent (one transaction)."""
    names = [value.name for value in load_profile(None).values]
    store = AgentStore(data_dir / f"agent-{FARM}.db")
    ReadingQueue(store, max_readings=count + 1000, max_age_s=8 * 86400)  # its tables
    start = utc_now() - timedelta(seconds=5 * count)
    rows = []
    for index in range(count):
        reading = Reading(
            ts=start + timedelta(seconds=5 * index), seq=index + 1,
            values={name: round(20 + (index % 100) / 10 + n / 100, 1) for n, name in enumerate(names)},
            status={name: "ok" for name in names[:6]})
        rows.append((reading.seq, reading.ts.timestamp(), encode(reading)))
    with store.transaction() as db:
        db.executemany("INSERT INTO queue (seq, ts, payload) VALUES (?, ?, ?)", rows)
        store.set(SEQ, count)
    store.close()


def start_mosquitto(folder: Path, users: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    passwords = folder / "mosquitto.passwd"
    passwords.touch(mode=0o600)
    for user, password in users.items():
        subprocess.run(["mosquitto_passwd", "-b", str(passwords), user, password], check=True)
    config = folder / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {passwords}\n"
                      "persistence false\nmax_queued_messages 0\nset_tcp_nodelay true\nuser root\n")
    with open(folder / "mosquitto.log", "wb") as log:
        process = subprocess.Popen([MOSQUITTO, "-c", str(config)], stdout=log, stderr=subprocess.STDOUT)
    wait_until(lambda: port_open(port), 10, what="mosquitto")
    return process, port


def measure(folder: Path, peer: str, backlog: int, poll: float, replay_rate: float) -> dict[str, Any]:
    folder.mkdir()
    users = {"admin": "admin-secret", "discovery": "discovery-secret", FARM: "farm-secret"}
    broker: ServiceProcess | None = None
    mosquitto: subprocess.Popen[bytes] | None = None
    if peer == "embedded":
        store = IdentityStore(folder / "broker")
        for user, password in users.items():
            store.add(user, Role.ADMIN if user == "admin" else Role.DISCOVERY if user == "discovery" else Role.FARM,
                      password=password)
        port = free_port()
        broker = ServiceProcess(["broker", "--data-dir", str(folder / "broker"), "--mqtt-host", "127.0.0.1",
                                 "--mqtt-port", str(port), "--log-level", "WARNING"],
                                folder / "broker.log").wait_port(port)
    else:
        mosquitto, port = start_mosquitto(folder, users)
    url = f"mqtt://{{}}:{{}}@127.0.0.1:{port}"
    fill_queue(folder / "agent", backlog)
    discovery = start_discovery(folder, folder / "discovery", mqtt_port=port,
                                env={"MQTT_URL": url.format("discovery", users["discovery"]), "LOG_LEVEL": "WARNING"})
    simulator = Simulator(folder).start()
    timeline = Timeline()
    watcher = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    watcher.username_pw_set("admin", users["admin"])
    watcher.on_message = timeline.on_message
    watcher.on_connect = lambda client, *args: client.subscribe(
        [(f"kub/farms/{FARM}/#", 1), (f"kub/discovery/committed/{FARM}", 1)])
    watcher.connect("127.0.0.1", port)
    watcher.loop_start()
    agent = Agent(folder, folder / "agent", FARM, url.format(FARM, users[FARM]), simulator.modbus_url,
                  poll_interval=poll,
                  # 7 days queued fill the default bounds: these hold 8, so that no live reading pushes one out
                  extra_env={"MAX_INTERVAL": "0", "REPLAY_RATE": str(replay_rate), "QUEUE_MAX_AGE": str(8 * 86400),
                             "QUEUE_MAX_READINGS": str(8 * 86400 // 5)})
    try:
        wait_until(lambda: discovery.get("/health")[1]["broker"] == "connected", 10, what="discovery connected")
        agent.start()

        def stored() -> int:
            status, farm = discovery.get(f"/api/farms/{FARM}")
            return int(farm["history"]["readings"]) if status == 200 else 0

        wait_until(lambda: stored() >= backlog and agent.health()["backlog"] == 0, 1800, interval=0.2,
                   what="the backlog in the history")
        caught_up = time.monotonic()
        history = discovery.get(f"/api/farms/{FARM}")[1]["history"]
        assert history["missing"] == 0 and history["first_seq"] == 1  # every reading of the backlog, none dropped
        with timeline.lock:
            sent = list(timeline.backlog)
            states = [t for t in timeline.state if sent[0] <= t <= sent[-1]]
        # the watcher may fall behind a long replay and be cut off by the broker: its rate is of what it saw
        assert timeline.online_at is not None and sent
        logged = re.search(r"replayed (\d+) backlog reading\(s\) in ([\d.]+) s", agent.process.output()
                           if agent.process else "")
        intervals = [b - a for a, b in itertools.pairwise(states)]
        return {
            "peer": peer,
            "replayed": len(sent),
            "seen_all": len(sent) >= backlog,
            "rate": (len(sent) - 1) / (sent[-1] - sent[0]),
            "agent_rate": int(logged[1]) / float(logged[2]) if logged else 0.0,
            "catch_up": caught_up - timeline.online_at,
            "marks": timeline.marks,
            "intervals": intervals,
        }
    finally:
        agent.stop()
        watcher.loop_stop()
        watcher.disconnect()
        discovery.process.stop()
        simulator.stop()
        if broker:
            broker.stop()
        if mosquitto:
            mosquitto.send_signal(signal.SIGTERM)
            mosquitto.wait(5)


def describe(intervals: list[float]) -> str:
    if not intervals:
        return "none seen (the replay took less than one poll)"
    return (f"{len(intervals)} intervals: min {min(intervals):.2f} s, median {statistics.median(intervals):.2f} s,"
            f" max {max(intervals):.2f} s")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backlog", type=int, default=DAY_AT_5_S, help="readings queued (a day at 5 s: 17280)")
    parser.add_argument("--poll", type=float, default=1.0, help="live poll interval during the replay (s)")
    parser.add_argument("--replay-rate", type=float, default=0.0, help="the agent's REPLAY_RATE; 0 = no cap")
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for peer in ("embedded", "mosquitto"):
            results[peer] = measure(Path(folder) / peer, peer, args.backlog, args.poll, args.replay_rate)
    cap = f"{args.replay_rate:g}/s" if args.replay_rate else "no cap"
    print(f"Backlog replay: {args.backlog} readings queued ({args.backlog * 5 / 3600:g} h at 5 s), replay {cap},"
          f" live polls every {args.poll:g} s, agent -> broker -> discovery history\n")
    print(f"{'broker':<10} {'replay rate':>14} {'(agent log)':>12} {'catch-up':>10} {'marks':>6}"
          "  live state during the replay")
    for result in results.values():
        print(f"{result['peer']:<10} {result['rate']:>10.0f} r/s {result['agent_rate']:>8.0f} r/s"
              f" {result['catch_up']:>8.1f} s {result['marks']:>6}  {describe(result['intervals'])}"
              f"{'' if result['seen_all'] else ' (the watcher saw ' + str(result['replayed']) + ')'}")
    embedded, mosquitto = results["embedded"], results["mosquitto"]
    print(f"\nembedded/mosquitto replay rate: {embedded['rate'] / mosquitto['rate']:.2f}"
          f"  (catch-up {embedded['catch_up'] / mosquitto['catch_up']:.2f}x as long)")
    return results


if __name__ == "__main__":
    main()
