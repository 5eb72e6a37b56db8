"""Server-Sent-Events fan-out: 500 browsers' streams on one ``kubmesh mobile-web`` against 500 MQTT subscribers.

One embedded broker (``kubmesh broker``) and one mobile web process (gevent, one MQTT subscription)
run on loopback. A login through the form gives a session; 500 ``/events?farm=…`` streams are opened
with it. A publisher sends readings on ``state``; every stream's arrival of each reading is timed
from the moment it was published: p50, p99, max and the count delivered, with the web server's
memory (RSS) before and with the streams open. The peer, measured in the same run on the same
broker: the same number of clients subscribed to the broker directly, i.e. what the web adds over
the bus; and one more MQTT subscriber during the streams' phase, so that what the web adds to the
bus's own delivery shows. All clients live in this process, so the figures include its reading time.

    python benchmarks/sse_fanout.py [--clients 500] [--readings 40] [--interval 0.25]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import resource
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as paho

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.identities import Credentials, IdentityStore, Role
from contract.payloads import DeviceInfo, Meta, ProfileSummary, Reading, Status, encode, utc_now
from contract.topics import Topics
from tests.helpers import ServiceProcess, free_port, wait_until, web_login

FARM = "farm-bench"
TOPICS = Topics()
CONNECT_BATCH = 50  # opened this many at a time, so the listen backlog never overflows
SEQ = re.compile(rb'"seq": ?(\d+)')  # the wire's compact JSON and the stream's spaced one


@dataclass
class Timings:
    """When each reading was published and when each client got it (time.monotonic, one clock)."""

    published: dict[int, float] = field(default_factory=dict)
    arrivals: list[tuple[int, float]] = field(default_factory=list)

    def latencies_ms(self) -> list[float]:
        return sorted((at - self.published[seq]) * 1000 for seq, at in self.arrivals if seq in self.published)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class Publisher:
    """The farm's side: paho in its own thread, stamping each reading as it goes out."""

    def __init__(self, port: int, farm: Credentials) -> None:
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-publisher")
        self.client.username_pw_set(farm.username, farm.password)
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        self.seq = 0

    def announce(self) -> None:
        now = utc_now()
        meta = Meta(farm_id=FARM, name="Bench", owner_id=None, device=DeviceInfo(model="KUB-1063"),
                    agent_version="bench", poll_interval_s=5, profile=ProfileSummary(name="KUB-1063", values=[]),
                    ts=now)
        self.client.publish(TOPICS.status(FARM), encode(Status(state="online", ts=now)), qos=1, retain=True)
        self.client.publish(TOPICS.meta(FARM), encode(meta), qos=1, retain=True).wait_for_publish(10)

    def readings(self, timings: Timings, count: int, interval: float) -> None:
        for _ in range(count):
            self.seq += 1
            reading = Reading(ts=utc_now(), seq=self.seq, values={"temp_inside": 21.5 + self.seq % 10 / 10},
                              status={"temp_inside": "ok"})
            payload = encode(reading)
            timings.published[self.seq] = time.monotonic()
            self.client.publish(TOPICS.state(FARM), payload, qos=1)
            time.sleep(interval)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Probe:
    """One more MQTT subscriber, on its own thread, while the browsers' streams are measured: the bus alone."""

    def __init__(self, port: int, viewer: Credentials) -> None:
        self.timings = Timings()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-probe")
        self.client.username_pw_set(viewer.username, viewer.password)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.subscribe(TOPICS.state(FARM), qos=1)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise RuntimeError("the probe could not subscribe")

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        match = SEQ.search(message.payload)
        if match and not message.retain:
            self.timings.arrivals.append((int(match.group(1)), time.monotonic()))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def sse_client(port: int, cookie: str, timings: Timings, ready: Callable[[], None],
                     stop: asyncio.Event) -> None:
    """One browser's stream, read as a browser does: whole blocks as they arrive, each reading timed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /events?farm={FARM} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\n"
                 "Accept: text/event-stream\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n", 1)[0], head

    async def receive() -> None:
        announced = False
        while block := await reader.read(65536):
            now = time.monotonic()
            if not announced and b"retry:" in block:
                announced = True
                ready()
            timings.arrivals.extend((int(seq), now) for seq in SEQ.findall(block))

    receiving = asyncio.ensure_future(receive())
    await stop.wait()
    receiving.cancel()
    writer.close()


async def mqtt_client(index: int, port: int, viewer: Credentials, timings: Timings, ready: Callable[[], None],
                      stop: asyncio.Event) -> None:
    async with aiomqtt.Client("127.0.0.1", port, username=viewer.username, password=viewer.password,
                              identifier=f"bench-peer-{index}", keepalive=60) as client:
        await client.subscribe(TOPICS.state(FARM), qos=1)
        ready()

        async def receive() -> None:
            async for message in client.messages:
                if message.retain or not isinstance(message.payload, bytes):
                    continue
                match = SEQ.search(message.payload)
                if match:
                    timings.arrivals.append((int(match.group(1)), time.monotonic()))

        receiving = asyncio.ensure_future(receive())
        await stop.wait()
        receiving.cancel()


StartClient = Callable[[int, Timings, Callable[[], None], asyncio.Event], Coroutine[Any, Any, None]]


async def run_phase(name: str, clients: int, start_client: StartClient, publisher: Publisher, readings: int,
                    interval: float, on_connected: Callable[[], None] = lambda: None) -> Timings:
    """Connect ``clients`` (in batches), publish the readings, wait for them to arrive (15 s at most)."""
    timings = Timings()
    stop = asyncio.Event()
    connected = 0

    def ready() -> None:
        nonlocal connected
        connected += 1

    tasks: list[asyncio.Task[None]] = []
    started = time.monotonic()
    for first in range(0, clients, CONNECT_BATCH):
        for index in range(first, min(first + CONNECT_BATCH, clients)):
            tasks.append(asyncio.ensure_future(start_client(index, timings, ready, stop)))
        while connected < min(first + CONNECT_BATCH, clients):
            failed = [t for t in tasks if t.done() and t.exception()]
            if failed:
                raise RuntimeError(f"{name}: a client failed to connect") from failed[0].exception()
            await asyncio.sleep(0.02)
    print(f"  {name}: {clients} clients connected in {time.monotonic() - started:.1f} s")
    on_connected()
    await asyncio.to_thread(publisher.readings, timings, readings, interval)
    expected = clients * readings
    deadline = time.monotonic() + 15
    while len(timings.arrivals) < expected and time.monotonic() < deadline:  # noqa: ASYNC110 - a deadline poll
        await asyncio.sleep(0.1)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return timings


def summary(timings: Timings, clients: int, readings: int) -> dict[str, float]:
    latencies = timings.latencies_ms()
    if not latencies:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan"), "delivered": 0,
                "expected": clients * readings}
    return {
        "p50": statistics.median(latencies),
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "max": latencies[-1],
        "delivered": len(latencies),
        "expected": clients * readings,
    }


def raise_file_limit(clients: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, max(soft, 4 * clients + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--readings", type=int, default=40)
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between readings")
    args = parser.parse_args()
    raise_file_limit(args.clients)

    with tempfile.TemporaryDirectory(prefix="kubmesh-sse-bench-") as folder_name:
        folder = Path(folder_name)
        data = folder / "data"
        store = IdentityStore(data)
        store.add("admin", Role.ADMIN)
        farm, service = store.add(FARM, Role.FARM), store.add("mobile_web", Role.MOBILE_WEB)
        viewer = store.add("bench", Role.VIEWER, password="bench-viewer-pass")
        mqtt_port, web_port = free_port(), free_port()
        broker = ServiceProcess(["broker", "--data-dir", str(data), "--mqtt-host", "127.0.0.1",
                                 "--mqtt-port", str(mqtt_port)], folder / "broker.log").wait_port(mqtt_port)
        web = ServiceProcess(
            ["mobile-web", "--data-dir", str(data), "--host", "127.0.0.1", "--port", str(web_port)],
            folder / "web.log", env={"MQTT_URL": f"mqtt://mobile_web:{service.password}@127.0.0.1:{mqtt_port}",
                                     "LOG_LEVEL": "WARNING"},
        ).wait_port(web_port)
        publisher = Publisher(mqtt_port, farm)
        try:
            publisher.announce()
            cookie = web_login(web_port, viewer.username, "bench-viewer-pass")
            assert cookie is not None, "the web login refused"
            wait_until(lambda: urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{web_port}/farms/{FARM}", headers={"Cookie": cookie}), timeout=5).status == 200,
                20, what="the mobile web knowing the farm")
            idle_rss = rss_mb(web.proc.pid)
            memory: dict[str, float] = {}
            probe = Probe(mqtt_port, viewer)
            print(f"{args.clients} clients, {args.readings} readings every {args.interval} s, on loopback")

            web_timings = asyncio.run(run_phase(
                "SSE through kubmesh mobile-web", args.clients,
                lambda i, timings, ready, stop: sse_client(web_port, cookie, timings, ready, stop),
                publisher, args.readings, args.interval,
                on_connected=lambda: memory.__setitem__("open", rss_mb(web.proc.pid)),
            ))
            memory["after"] = rss_mb(web.proc.pid)
            probe.close()
            probe.timings.published = web_timings.published
            peer_timings = asyncio.run(run_phase(
                "MQTT subscribers on the broker", args.clients,
                lambda i, timings, ready, stop: mqtt_client(i, mqtt_port, viewer, timings, ready, stop),
                publisher, args.readings, args.interval,
            ))
        finally:
            publisher.close()
            web.stop()
            broker.stop()

    web_figures, peer_figures = summary(web_timings, args.clients, args.readings), summary(
        peer_timings, args.clients, args.readings)
    probe_figures = summary(probe.timings, 1, args.readings)
    print()
    print(f"{'':34} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'delivered':>16}")
    for name, figures in (("SSE via mobile-web", web_figures), ("MQTT direct (peer)", peer_figures)):
        print(f"{name:34} {figures['p50']:8.1f} {figures['p99']:8.1f} {figures['max']:8.1f} "
              f"{figures['delivered']:>7}/{figures['expected']:<8}")
    print(f"{'ratio SSE / MQTT':34} {web_figures['p50'] / peer_figures['p50']:8.2f} "
          f"{web_figures['p99'] / peer_figures['p99']:8.2f} {web_figures['max'] / peer_figures['max']:8.2f}")
    print(f"{'1 MQTT subscriber during SSE':34} {probe_figures['p50']:8.1f} {probe_figures['p99']:8.1f} "
          f"{probe_figures['max']:8.1f} {probe_figures['delivered']:>7}/{probe_figures['expected']:<8}")
    print(f"the web adds over the bus: p50 {web_figures['p50'] - probe_figures['p50']:.1f} ms, "
          f"p99 {web_figures['p99'] - probe_figures['p99']:.1f} ms")
    print(f"mobile-web RSS: {idle_rss:.1f} MB idle, {memory['open']:.1f} MB with {args.clients} streams open, "
          f"{memory['after']:.1f} MB after the readings "
          f"({(memory['open'] - idle_rss) * 1024 / args.clients:.0f} kB per stream)")
    return 0 if web_figures["delivered"] == web_figures["expected"] else 1


if __name__ == "__main__":
    sys.exit(main())
