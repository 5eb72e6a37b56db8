"""Alarm storm: 1,000 farms raise an alarm at once; every farm's notification must arrive, one per farm.

A real discovery node (``kubmesh discovery``, its embedded broker) with 1,000 farm identities and one
user whose channel is Apprise ``json://`` to a local HTTP receiver in this process. A fleet of farm
connections (benchmarks/mqtt_load.py) publishes each farm's ``alarms`` with two active bits at once;
the receiver notes when each farm's message arrives. Printed: messages delivered, farms told, messages
per farm (grouping: two bits, one message), p50/p99 from the alarm's publish to the receiver (ALERT_DELAY
included, and without it), and the broker's p99 publish-to-delivery latency for probe farms publishing
readings during the storm, against the peer measured in the same run: the same storm on a node with no
one to tell (what the alarms cost the node anyway), and the ratio.

    .venv/bin/python benchmarks/alarm_storm.py [--farms 1000] [--delay 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiohttp import web

from benchmarks.mqtt_load import (
    Fleet,
    child_process,
    farm_names,
    free_port,
    make_farms,
    percentile,
    raise_open_files_limit,
    receive,
    run_fleet,
    run_subscriber,
    wait_port,
)
from common.identities import Credentials, IdentityStore, Role
from contract.payloads import AlarmItem, Alarms, encode, utc_now
from contract.topics import Topics

REPO = Path(__file__).resolve().parent.parent
TOPICS = Topics()
PROBES = 50  # probe farms publishing one reading a second each, for the broker's latency
WINDOW_S = 8.0


class Receiver:
    """The channel's far end: notes the arrival of each farm's message (monotonic ns)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.arrivals: dict[str, list[int]] = {}
        self.bits_per_message: list[int] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()
        self._ready.wait(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/storm", self._handle)
        runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port, backlog=1024).start())
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        now = time.monotonic_ns()
        farm = body["message"].splitlines()[0].split()[0]
        self.arrivals.setdefault(farm, []).append(now)
        self.bits_per_message.append(body["message"].count("бит"))
        return web.json_response({})


def run_alarm_fleet(port: int, farms: list[Credentials], pipe: object) -> None:
    """Child process: connect every farm; on "go", publish every farm's alarms (two bits) at once and
    report when each was sent."""
    raise_open_files_limit()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        fleet = Fleet(port, farms)
        await fleet.connect_all()
        calm = encode(Alarms(ts=utc_now()))
        topics = [TOPICS.alarms(f.username).encode() for f in farms]
        from benchmarks.mqtt_load import publish_packet

        for index, conn in enumerate(fleet.connections):
            if conn is not None:
                conn.send(publish_packet(topics[index], conn.next_packet_id(), calm))
        pipe.send(("connected", fleet.stats.connected))  # type: ignore[attr-defined]
        await loop.run_in_executor(None, pipe.recv)  # type: ignore[attr-defined]
        storm = encode(Alarms(ts=utc_now(), active=[AlarmItem(bit=3, label="alarm bit 3"),
                                                    AlarmItem(bit=12, label="alarm bit 12")]))
        sent: dict[str, int] = {}
        for index, conn in enumerate(fleet.connections):
            if conn is not None:
                conn.send(publish_packet(topics[index], conn.next_packet_id(), storm))
                sent[farms[index].username] = time.monotonic_ns()
        pipe.send(("sent", sent))  # type: ignore[attr-defined]
        await loop.run_in_executor(None, pipe.recv)  # type: ignore[attr-defined]
        await fleet.leave_all()

    asyncio.run(main())


def broker_p99(port: int, probes: list[Credentials], reader: Credentials, during: object | None) -> float:
    """p99 (ms) of the probes' readings, publish to delivery, over WINDOW_S; ``during`` runs meanwhile."""
    with child_process(run_subscriber, port, reader) as sub, child_process(run_fleet, port, probes) as fleet:
        receive(sub, "subscriber")
        receive(fleet, "probe fleet")
        start = time.monotonic_ns() + 500_000_000
        window = (start, start + int(WINDOW_S * 1e9))
        sub.send(window)
        fleet.send((window, window[1] + 500_000_000))
        if callable(during):
            during()
        receive(fleet, "probe fleet", WINDOW_S + 60)
        sub.send("stop")
        _, _, raw = receive(sub, "subscriber")
        fleet.send("leave")
    latencies = array("q")
    latencies.frombytes(raw)
    return percentile(sorted(latencies), 99) / 1000


@dataclass
class StormResult:
    connected: int
    quiet_p99_ms: float
    storm_p99_ms: float
    sent: dict[str, int] = field(default_factory=dict)


def storm(farms: list[Credentials], probes: list[Credentials], delay: float, channel: str | None) -> StormResult:
    """A fresh node; its broker's p99 with the probes alone, then while every farm raises its alarm."""
    with tempfile.TemporaryDirectory(prefix="kubmesh-alarm-storm-") as folder:
        data = Path(folder) / "data"
        store = IdentityStore(data)
        store.add_many([(f.username, Role.FARM, "storm-owner", f.password) for f in farms + probes])
        store.add("farmer", Role.OPERATOR, password="storm-farmer-password")
        reader = store.add("bench-reader", Role.VIEWER, password="storm-reader-password")
        rules = Path(folder) / "rules.yaml"
        rules.write_text("rules: []\n")
        mqtt_port, api_port = free_port(), free_port()
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "ALERT_DELAY": str(delay), "ALERT_RULES": str(rules),
               "ALERT_REMIND_INTERVAL": "3600", "ALERT_ESCALATE_AFTER": "3600", "ALERT_SILENT_AFTER": "3600"}
        if channel:
            subprocess.run([sys.executable, "-m", "kubmesh", "notify", "add", "farmer", channel, "--data-dir",
                            str(data)], check=True, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
        with open(Path(folder) / "discovery.log", "wb") as log:
            node = subprocess.Popen(
                [sys.executable, "-m", "kubmesh", "discovery", "--data-dir", str(data), "--mqtt-host", "127.0.0.1",
                 "--mqtt-port", str(mqtt_port), "--host", "127.0.0.1", "--port", str(api_port),
                 "--log-level", "WARNING"], stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        try:
            wait_port(api_port, node)
            result = StormResult(0, broker_p99(mqtt_port, probes, reader, None), 0.0)
            with child_process(run_alarm_fleet, mqtt_port, farms) as fleet:
                result.connected = receive(fleet, "alarm fleet", 180)[1]
                time.sleep(2.0)  # the calm alarms reach the node before the storm

                def raise_alarms() -> None:
                    fleet.send("go")
                    result.sent.update(receive(fleet, "alarm fleet")[1])

                result.storm_p99_ms = broker_p99(mqtt_port, probes, reader, raise_alarms)
                fleet.send("leave")
        finally:
            node.terminate()
            node.wait(30)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--farms", type=int, default=1000)
    parser.add_argument("--delay", type=float, default=1.0, help="ALERT_DELAY of the node")
    args = parser.parse_args()
    raise_open_files_limit()
    receiver = Receiver()
    farms = make_farms(args.farms)
    probes = [Credentials(f"probe-{name}", c.password) for name, c in zip(farm_names(PROBES), make_farms(PROBES),
                                                                          strict=True)]
    # the peer: the same storm on a node with no one to tell, i.e. what the alarms cost the node anyway
    peer = storm(farms, probes, args.delay, None)
    ours = storm(farms, probes, args.delay, f"json://127.0.0.1:{receiver.port}/storm")
    deadline = time.monotonic() + 120
    while len(receiver.arrivals) < ours.connected and time.monotonic() < deadline:
        time.sleep(0.1)
    firsts = {farm: min(times) for farm, times in receiver.arrivals.items()}
    latencies = sorted((firsts[f] - ours.sent[f]) // 1_000_000 for f in firsts if f in ours.sent)
    messages = sum(len(times) for times in receiver.arrivals.values())
    delay_ms = args.delay * 1000
    bits = receiver.bits_per_message or [0]
    print(f"alarm storm: {args.farms} farms ({ours.connected} connected), two alarm bits each, "
          f"ALERT_DELAY {args.delay:g} s")
    print(f"  delivered       {messages} messages to {len(firsts)} farms' recipient "
          f"({messages / max(1, len(firsts)):.2f} per farm; alarm bits per message {min(bits)}-{max(bits)})")
    print(f"  alarm→receiver  p50 {percentile(latencies, 50):.0f} ms, p99 {percentile(latencies, 99):.0f} ms "
          f"(beyond the delay: p50 {percentile(latencies, 50) - delay_ms:.0f} ms, "
          f"p99 {percentile(latencies, 99) - delay_ms:.0f} ms)")
    print(f"  broker p99      {ours.storm_p99_ms:.1f} ms during the storm ({ours.quiet_p99_ms:.1f} ms before it); "
          f"the same storm with no one to tell: {peer.storm_p99_ms:.1f} ms ({peer.quiet_p99_ms:.1f} ms before it); "
          f"ratio {ours.storm_p99_ms / peer.storm_p99_ms:.2f}x")
    if len(firsts) < ours.connected or messages != len(firsts):
        sys.exit(f"FAILED: {len(firsts)} of {ours.connected} farms told, {messages} messages")


if __name__ == "__main__":
    main()
