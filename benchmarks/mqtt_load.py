"""A load generator for the broker benchmarks: a minimal MQTT 3.1.1 client on raw asyncio transports.

Each farm is one TCP connection with its own credentials that publishes retained QoS 1 readings;
one subscriber acknowledges every delivery and records publish-to-delivery latency from the send
time the publisher writes into the payload (CLOCK_MONOTONIC, shared by every process of the
machine). The protocol work is a few byte operations per packet, so one process drives thousands
of connections while costing a small share of what the broker under test spends.

The fleet and the subscriber run in processes of their own (``run_fleet``, ``run_subscriber``), so
neither one's scheduling delays the other; the benchmark scripts drive them through pipes.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from broker.acl import AclRules
from broker.mosquitto import export_mosquitto
from common.identities import Credentials, IdentityStore, Role, new_token
from contract.topics import FarmTopic, Topics

REPO = Path(__file__).resolve().parent.parent
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
TOPICS = Topics()
CONNECT_CONCURRENCY = 200
KEEPALIVE_S = 120

CONNACK, PUBLISH, PUBACK, SUBACK, PINGRESP = 2, 3, 4, 9, 13


def raise_open_files_limit() -> int:
    """Thousands of sockets need thousands of descriptors; children (the brokers) inherit the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        digit, n = n % 128, n // 128
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return struct.pack("!H", len(raw)) + raw


def connect_packet(client_id: str, username: str, password: str, keepalive: int = KEEPALIVE_S) -> bytes:
    flags = 0x80 | 0x40 | 0x02  # username, password, clean session
    body = _str("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive)
    body += _str(client_id) + _str(username) + _str(password)
    return bytes([0x10]) + _varint(len(body)) + body


def publish_packet(topic: bytes, packet_id: int, payload: bytes, retain: bool = True) -> bytes:
    body = _str(topic) + struct.pack("!H", packet_id) + payload
    return bytes([0x32 | (1 if retain else 0)]) + _varint(len(body)) + body


def subscribe_packet(topic_filter: str, packet_id: int = 1, qos: int = 1) -> bytes:
    body = struct.pack("!H", packet_id) + _str(topic_filter) + bytes([qos])
    return bytes([0x82]) + _varint(len(body)) + body


DISCONNECT = b"\xe0\x00"
PINGREQ = b"\xc0\x00"


def reading(seq: int, sent_ns: int) -> bytes:
    """A ``state`` payload of the size farms send (about 200 bytes), with the send time in it."""
    return (
        b'{"ts":"2026-11-25T12:00:00.000Z","seq":%d,"sent_ns":%d,"values":{"temp_inside":21.4,'
        b'"humidity":63.0,"co2":812,"temp_outside":7.9,"fan_speed":40,"heater":0,"vent_position":35},'
        b'"status":{"temp_inside":"ok","humidity":"ok","co2":"ok","temp_outside":"ok"}}' % (seq, sent_ns)
    )


def sent_ns_of(payload: bytes) -> int:
    start = payload.index(b'"sent_ns":') + 10
    return int(payload[start:payload.index(b",", start)])


class PacketReader:
    """Splits a byte stream into MQTT packets: (type, flags, body)."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[tuple[int, int, bytes]]:
        buffer = self.buffer
        buffer += data
        pos, end = 0, len(buffer)
        while True:
            length, multiplier, i = 0, 1, pos + 1
            while i < end:
                byte = buffer[i]
                length += (byte & 0x7F) * multiplier
                multiplier *= 128
                i += 1
                if not byte & 0x80:
                    break
            else:
                break  # the length is not all here yet
            if i + length > end:
                break
            header = buffer[pos]
            yield header >> 4, header & 0x0F, bytes(buffer[i:i + length])
            pos = i + length
        del buffer[:pos]


class MqttConnection(asyncio.Protocol):
    """One client connection: CONNECT on open, then hands every packet to ``on_packet``."""

    def __init__(self, connect: bytes, on_packet: Callable[[MqttConnection, int, int, bytes], None]) -> None:
        self.connect = connect
        self.on_packet = on_packet
        self.reader = PacketReader()
        self.transport: asyncio.Transport | None = None
        self.connack: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self.packet_id = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.connect)

    def data_received(self, data: bytes) -> None:
        for kind, flags, body in self.reader.feed(data):
            if kind == CONNACK and not self.connack.done():
                self.connack.set_result(body[1])
            else:
                self.on_packet(self, kind, flags, body)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.connack.done():
            self.connack.set_result(-1)
        if not self.closed.done():
            self.closed.set_result(None)

    def next_packet_id(self) -> int:
        self.packet_id = self.packet_id % 65535 + 1
        return self.packet_id

    def send(self, data: bytes) -> bool:
        if self.transport is None or self.transport.is_closing():
            return False
        self.transport.write(data)
        return True

    def leave(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(DISCONNECT)
            self.transport.close()


async def open_connection(
    port: int, connect: bytes, on_packet: Callable[[MqttConnection, int, int, bytes], None], wait_s: float = 30.0
) -> MqttConnection:
    """Connect and wait for CONNACK; raises ConnectionError unless the broker accepted."""
    loop = asyncio.get_running_loop()
    _, protocol = await asyncio.wait_for(
        loop.create_connection(lambda: MqttConnection(connect, on_packet), "127.0.0.1", port), wait_s
    )
    code = await asyncio.wait_for(protocol.connack, wait_s)
    if code != 0:
        if protocol.transport:
            protocol.transport.close()
        raise ConnectionError(f"CONNACK {code}")
    return protocol


@dataclass
class FleetStats:
    connected: int = 0
    failed: int = 0
    sent: int = 0
    sent_in_window: int = 0
    acked: int = 0
    connect_s: float = 0.0
    errors: list[str] = field(default_factory=list)


class Fleet:
    """N farm connections, each with its own credentials, publishing ``state`` at ``rate`` per second each."""

    def __init__(self, port: int, farms: list[Credentials]) -> None:
        self.port = port
        self.farms = farms
        self.connections: list[MqttConnection | None] = [None] * len(farms)
        self.topics = [TOPICS.state(farm.username).encode() for farm in farms]
        self.stats = FleetStats()
        self.all_acked = asyncio.Event()

    def _on_packet(self, conn: MqttConnection, kind: int, flags: int, body: bytes) -> None:
        if kind == PUBACK:
            self.stats.acked += 1
            if self.stats.acked >= self.stats.sent:
                self.all_acked.set()

    async def connect_all(self, concurrency: int = CONNECT_CONCURRENCY, retry_until: float = 0.0) -> float:
        """Connect every farm, ``concurrency`` CONNECTs in flight; with ``retry_until`` (a monotonic
        deadline), a farm refused or cut off tries again, as real agents do after a broker restart."""
        started = time.monotonic()
        limit = asyncio.Semaphore(concurrency)

        async def one(index: int) -> None:
            farm = self.farms[index]
            packet = connect_packet(farm.username, farm.username, farm.password)
            while True:
                async with limit:
                    try:
                        self.connections[index] = await open_connection(self.port, packet, self._on_packet)
                        return
                    except (OSError, ConnectionError, TimeoutError) as exc:
                        error = f"{farm.username}: {exc!r}"
                if time.monotonic() >= retry_until:
                    self.stats.failed += 1
                    self.stats.errors.append(error)
                    return
                await asyncio.sleep(0.05)

        await asyncio.gather(*(one(i) for i in range(len(self.farms))))
        self.stats.connected = sum(1 for c in self.connections if c is not None)
        self.stats.connect_s = time.monotonic() - started
        return self.stats.connect_s

    def publish_one(self, index: int, seq: int, window: tuple[int, int] | None = None) -> bool:
        conn = self.connections[index]
        if conn is None:
            return False
        now = time.monotonic_ns()
        if not conn.send(publish_packet(self.topics[index], conn.next_packet_id(), reading(seq, now))):
            return False
        self.stats.sent += 1
        if window and window[0] <= now < window[1]:
            self.stats.sent_in_window += 1
        return True

    async def publish_until(self, stop_ns: int, window: tuple[int, int], rate: float = 1.0) -> None:
        """Every farm publishes ``rate`` times a second, spread evenly over the second."""
        count = len(self.farms)
        started = time.monotonic()
        done = 0
        while time.monotonic_ns() < stop_ns:
            due = int((time.monotonic() - started) * rate * count)
            while done < due:
                self.publish_one(done % count, done // count, window)
                done += 1
            await asyncio.sleep(0.005)

    async def leave_all(self) -> None:
        for conn in self.connections:
            if conn is not None:
                conn.leave()
        await asyncio.gather(*(c.closed for c in self.connections if c is not None))
        self.connections = [None] * len(self.farms)


class Subscriber:
    """One client on ``kub/farms/+/state``: acknowledges every delivery, keeps latencies of the window."""

    def __init__(self, window: tuple[int, int]) -> None:
        self.window = window
        self.latencies_us = array("q")
        self.received = 0
        self.received_in_window = 0
        self.suback = asyncio.get_running_loop().create_future()

    def on_packet(self, conn: MqttConnection, kind: int, flags: int, body: bytes) -> None:
        if kind == PUBLISH:
            now = time.monotonic_ns()
            topic_len = struct.unpack_from("!H", body)[0]
            qos = (flags >> 1) & 3
            offset = 2 + topic_len
            if qos:
                conn.send(b"\x40\x02" + body[offset:offset + 2])
                offset += 2
            self.received += 1
            if flags & 1:
                return  # a retained copy from before the subscription: not a live delivery
            sent = sent_ns_of(body[offset:])
            if self.window[0] <= sent < self.window[1]:
                self.received_in_window += 1
                self.latencies_us.append((now - sent) // 1000)
        elif kind == SUBACK and not self.suback.done():
            self.suback.set_result(body[2])


def receive(pipe: Connection, what: str, timeout_s: float = 120.0) -> Any:
    """The next report of a child process, or an error naming it when none comes in time."""
    if not pipe.poll(timeout_s):
        raise RuntimeError(f"no answer from the {what} within {timeout_s:.0f} s")
    return pipe.recv()


@contextmanager
def child_process(target: Callable[..., None], *args: object) -> Iterator[Connection]:
    """``target(*args, pipe)`` in a forked process while the block runs; yields this side's end of the pipe."""
    context = multiprocessing.get_context("fork")
    pipe, child_end = context.Pipe()
    process = context.Process(target=target, args=(*args, child_end), daemon=True)
    process.start()
    try:
        yield pipe
    finally:
        process.join(30)
        if process.is_alive():
            process.kill()


def _use_uvloop() -> None:
    """The load generator runs on uvloop when it is installed, so its own cost stays small."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def run_subscriber(port: int, credentials: Credentials, pipe: Connection) -> None:
    """Child process: subscribe, report ready, wait for the window, collect until told to stop."""
    _use_uvloop()

    async def main() -> None:
        window_holder: list[tuple[int, int]] = []
        loop = asyncio.get_running_loop()
        subscriber = Subscriber((0, 0))
        conn = await open_connection(port, connect_packet("bench-subscriber", credentials.username,
                                                          credentials.password), subscriber.on_packet)
        conn.send(subscribe_packet(TOPICS.all_farms(FarmTopic.STATE)))
        granted = await asyncio.wait_for(subscriber.suback, 10)
        pipe.send(("ready", granted))
        window_holder.append(await loop.run_in_executor(None, pipe.recv))
        subscriber.window = window_holder[0]
        await loop.run_in_executor(None, pipe.recv)  # "stop"
        conn.leave()
        pipe.send((subscriber.received, subscriber.received_in_window, subscriber.latencies_us.tobytes()))

    asyncio.run(main())


def run_fleet(port: int, farms: list[Credentials], pipe: Connection) -> None:
    """Child process: connect every farm, report, publish through the window it is sent, report counts."""
    raise_open_files_limit()
    _use_uvloop()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        fleet = Fleet(port, farms)
        await fleet.connect_all()
        pipe.send(("connected", fleet.stats.connected, fleet.stats.failed, fleet.stats.connect_s,
                   fleet.stats.errors[:3]))
        window, stop_ns = await loop.run_in_executor(None, pipe.recv)
        await fleet.publish_until(stop_ns, window)
        await asyncio.sleep(1.0)  # the last acks
        pipe.send(("done", fleet.stats.sent, fleet.stats.sent_in_window, fleet.stats.acked))
        await loop.run_in_executor(None, pipe.recv)  # "leave"
        await fleet.leave_all()

    asyncio.run(main())


def run_cycles(port: int, farms: list[Credentials], cycles: int, pipe: Connection) -> None:
    """Child process: ``cycles`` times, connect every farm and publish one retained reading each
    (reporting once all are acknowledged), then leave (reporting once every socket is closed)."""
    raise_open_files_limit()
    _use_uvloop()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        fleet = Fleet(port, farms)
        for cycle in range(cycles):
            await fleet.connect_all()
            fleet.all_acked.clear()
            for index in range(len(farms)):
                fleet.publish_one(index, cycle)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(fleet.all_acked.wait(), 60)
            pipe.send(("connected", fleet.stats.connected, fleet.stats.connect_s))
            await loop.run_in_executor(None, pipe.recv)
            await fleet.leave_all()
            pipe.send(("left",))
            await loop.run_in_executor(None, pipe.recv)

    asyncio.run(main())


def run_storm(port: int, farms: list[Credentials], pipe: Connection) -> None:
    """Child process: connect every farm; whenever a farm's connection ends it reconnects at once
    (retrying every 50 ms, as an agent does) and publishes a reading. Once told when the new broker
    process started, it waits until every farm has had a reading acknowledged on a connection made
    after that moment (a broker that is shutting down may still accept a few), and reports, in
    monotonic ns, when the last farm was connected again and when its reading was acknowledged."""
    raise_open_files_limit()
    _use_uvloop()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        fleet = Fleet(port, farms)
        await fleet.connect_all()
        pipe.send(("connected", fleet.stats.connected, fleet.stats.connect_s))
        acks: list[list[tuple[int, int]]] = [[] for _ in farms]  # per farm: (connected, acknowledged)
        restarted: list[int] = []
        progress = asyncio.Event()

        def back_since(started: int) -> list[tuple[int, int]]:
            return [next((e for e in events if e[0] >= started), (0, 0)) for events in acks]

        async def stay_connected(index: int, old: MqttConnection | None) -> None:
            packet = connect_packet(farms[index].username, farms[index].username, farms[index].password)
            conn = old
            while True:
                if conn is not None:
                    await conn.closed
                acked: asyncio.Future[int] = loop.create_future()

                def on_packet(c: MqttConnection, kind: int, flags: int, body: bytes,
                              acked: asyncio.Future[int] = acked) -> None:
                    if kind == PUBACK and not acked.done():
                        acked.set_result(time.monotonic_ns())

                try:
                    conn = await open_connection(port, packet, on_packet)
                except (OSError, ConnectionError, TimeoutError):
                    conn = None
                    await asyncio.sleep(0.05)
                    continue
                connected = time.monotonic_ns()
                conn.send(publish_packet(fleet.topics[index], conn.next_packet_id(), reading(0, connected)))
                await asyncio.wait([acked, conn.closed], timeout=30, return_when=asyncio.FIRST_COMPLETED)
                if acked.done():
                    acks[index].append((connected, acked.result()))
                    fleet.connections[index] = conn
                    progress.set()

        tasks = [asyncio.create_task(stay_connected(i, c)) for i, c in enumerate(fleet.connections)]
        restarted.append(await loop.run_in_executor(None, pipe.recv))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(e[1] for e in back_since(restarted[0])):
            progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(progress.wait(), 1)
        back = [e for e in back_since(restarted[0]) if e[1]]
        pipe.send(("storm", len(back), max((e[0] for e in back), default=0), len(back),
                   max((e[1] for e in back), default=0), [f"{len(farms) - len(back)} farms not back"]
                   if len(back) < len(farms) else []))
        await loop.run_in_executor(None, pipe.recv)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await fleet.leave_all()

    asyncio.run(main())


def percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values)) - 1))
    return float(sorted_values[index])


# -- the brokers under test ------------------------------------------------------------------------


def farm_names(count: int) -> list[str]:
    return [f"farm-{i:05d}" for i in range(count)]


@dataclass
class BrokerUnderTest:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    folder: Path
    farms: list[Credentials]
    reader: Credentials
    start_command: list[str]

    def rss_kb(self) -> int:
        return rss_kb(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def start_again(self) -> None:
        """Start the stopped broker again, on the same port with the same identities; returns once it listens."""
        self.process = _spawn(self.start_command, self.folder / f"{self.name}.log")
        wait_port(self.port, self.process)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"broker exited with {process.returncode} before listening on {port}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout} s")


def _spawn(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})


def make_farms(count: int) -> list[Credentials]:
    return [Credentials(name, new_token()) for name in farm_names(count)]


def start_embedded(folder: Path, farms: list[Credentials], log_level: str = "WARNING") -> BrokerUnderTest:
    """``python -m kubmesh broker`` with these farms (and a reader) in its identity store."""
    data = folder / "embedded-data"
    store = IdentityStore(data)
    store.add_many([(farm.username, Role.FARM, "bench-owner", farm.password) for farm in farms])
    reader = store.add("bench-reader", Role.DISCOVERY)
    port = free_port()
    command = [sys.executable, "-m", "kubmesh", "broker", "--data-dir", str(data), "--mqtt-host", "127.0.0.1",
               "--mqtt-port", str(port), "--log-level", log_level]
    process = _spawn(command, folder / "embedded.log")
    wait_port(port, process)
    return BrokerUnderTest("embedded", port, process, folder, farms, reader, command)


def start_mosquitto(folder: Path, farms: list[Credentials]) -> BrokerUnderTest:
    """Mosquitto with the password file and ACL ``kubmesh broker export-mosquitto`` writes for the same
    farms (and reader): the same identities under the same topic rules as the embedded broker."""
    data = folder / "mosquitto-data"
    store = IdentityStore(data)
    store.add_many([(farm.username, Role.FARM, "bench-owner", farm.password) for farm in farms])
    reader = store.add("bench-reader", Role.DISCOVERY)
    export = export_mosquitto(store, AclRules(TOPICS), folder / "mosquitto-export")
    port = free_port()
    config = folder / "mosquitto.conf"
    config.write_text("\n".join([
        "per_listener_settings false", "allow_anonymous false", "persistence false", "user root",
        f"password_file {export.password_file}", f"acl_file {export.acl_file}", f"listener {port} 127.0.0.1",
        "log_type error", "log_type warning", "",
    ]))
    command = [MOSQUITTO, "-c", str(config)]
    process = _spawn(command, folder / "mosquitto.log")
    wait_port(port, process)
    return BrokerUnderTest("mosquitto", port, process, folder, farms, reader, command)


def mosquitto_version() -> str:
    result = subprocess.run([MOSQUITTO, "-h"], capture_output=True, text=True)
    return (result.stdout or result.stderr).splitlines()[0].removeprefix("mosquitto version ").strip()


@contextmanager
def broker_under_test(kind: str, farms: list[Credentials]) -> Iterator[BrokerUnderTest]:
    with tempfile.TemporaryDirectory(prefix=f"kubmesh-bench-{kind}-") as folder:
        broker = (start_embedded if kind == "embedded" else start_mosquitto)(Path(folder), farms)
        try:
            yield broker
        finally:
            broker.stop()


BROKERS = ("embedded", "mosquitto")


def ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}x" if theirs else "n/a"
