"""The broker's memory under a viewer's attacks: kubmesh's broker against Mosquitto, in the same run.

A viewer (who may publish nothing) tries to make the broker hold memory:

- one PUBLISH announcing and sending 200 MB;
- twenty connections that each announce a 256 MB PUBLISH, send 4 MB of it and wait;
- 1,000 QoS 2 PUBLISHes of 65 kB, acknowledged by the broker (PUBREC) and never released (PUBREL).

The broker's RSS (``/proc/PID/status``) is printed before and after each, with the attack's
connections still open, and its peak (``VmHWM``) during it; each attack runs on a fresh broker.
Run from another checkout to measure another version of the broker.

    python benchmarks/broker_attacks.py [--brokers embedded mosquitto]
"""

from __future__ import annotations

import argparse
import signal
import socket
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.mqtt_load import (
    BROKERS,
    TOPICS,
    BrokerUnderTest,
    connect_packet,
    make_farms,
    ratio,
    start_embedded,
    start_mosquitto,
)
from broker.acl import AclRules
from broker.mosquitto import export_mosquitto
from broker.mqtt_packets import remaining_length
from common.identities import Credentials, IdentityStore, Role

MB = 1024 * 1024
SETTLE_S = 1.0  # after an attack, before its RSS is read: the broker has taken in what it was sent




def publish_head(topic: str, length: int, qos: int, packet_id: int) -> bytes:
    """A PUBLISH's fixed header, topic and packet id, announcing ``length`` bytes of payload."""
    variable = struct.pack("!H", len(topic)) + topic.encode() + struct.pack("!H", packet_id)
    return bytes([0x30 | qos << 1]) + remaining_length(len(variable) + length) + variable


def viewer_connection(port: int, viewer: Credentials, client_id: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(connect_packet(client_id, viewer.username, viewer.password))
    connack = sock.recv(4)
    if connack[3:4] != b"\x00":
        raise RuntimeError(f"the viewer was refused: {connack!r}")
    return sock


def send_quietly(sock: socket.socket, data: bytes) -> bool:
    """Send, or False once the broker has closed the connection."""
    try:
        sock.sendall(data)
    except OSError:
        return False
    return True


def one_huge_publish(socks: list[socket.socket]) -> str:
    chunk = b"x" * MB
    sent = 0
    if send_quietly(socks[0], publish_head(TOPICS.state("farm-00000"), 200 * MB, 1, 1)):
        while sent < 200 and send_quietly(socks[0], chunk):
            sent += 1
    return f"{sent} MB of 200 taken"


def announced_publishes(socks: list[socket.socket]) -> str:
    taken = 0
    for sock in socks:
        sent = 0
        if send_quietly(sock, publish_head(TOPICS.state("farm-00000"), 256 * MB, 1, 1)):
            while sent < 4 and send_quietly(sock, b"x" * MB):
                sent += 1
        taken += sent
    return f"{taken} MB of 80 taken"


def unreleased_qos2(socks: list[socket.socket]) -> str:
    sock = socks[0]
    payload = b"x" * 65_000
    sent = 0
    for packet_id in range(1, 1001):
        if not send_quietly(sock, publish_head(TOPICS.state("farm-00000"), len(payload), 2, packet_id) + payload):
            break
        sent += 1
    received, deadline = b"", time.monotonic() + 30
    sock.settimeout(1)
    while len(received) < 4 * sent and time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            break
        if not data:
            break
        received += data
    return f"{sent} sent, {len(received) // 4} PUBREC"


# each attack: its connections (logged in before the first figure), then what it sends on them
ATTACKS: list[tuple[str, int, Callable[[list[socket.socket]], str]]] = [
    ("one 200 MB PUBLISH", 1, one_huge_publish),
    ("20 × announced 256 MB", 20, announced_publishes),
    ("1,000 unreleased 65 kB QoS 2", 1, unreleased_qos2),
]


def peak_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for process {pid}")


def add_viewer(broker: BrokerUnderTest) -> Credentials:
    """A viewer in the broker's identity store (Mosquitto gets the exported files again and a SIGHUP)."""
    data = broker.folder / f"{broker.name}-data"
    store = IdentityStore(data)
    viewer = store.add("bench-viewer", Role.VIEWER)
    if broker.name == "mosquitto":
        export_mosquitto(store, AclRules(TOPICS), broker.folder / "mosquitto-export")
        broker.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while True:
        try:
            viewer_connection(broker.port, viewer, "bench-viewer-check").close()
            break
        except (OSError, RuntimeError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    return viewer


Row = tuple[str, float, float, float, str]  # attack, RSS before, after, peak (MB), outcome


def measure(kind: str, folder: Path) -> list[Row]:
    start = start_embedded if kind == "embedded" else start_mosquitto
    rows = []
    for name, connections, attack in ATTACKS:  # each on a fresh broker, so one's leftovers do not hide the next
        sub = folder / f"{kind}-{len(rows)}"
        sub.mkdir()
        broker = start(sub, make_farms(1))
        held: list[socket.socket] = []
        try:
            viewer = add_viewer(broker)
            # logged in first: checking a password (the embedded broker's scrypt) takes 16 MB of its own
            held += [viewer_connection(broker.port, viewer, f"attack-{n}") for n in range(connections)]
            time.sleep(SETTLE_S)
            before = broker.rss_kb() / 1024
            outcome = attack(held)
            time.sleep(SETTLE_S)
            after = broker.rss_kb() / 1024
            rows.append((name, before, after, peak_kb(broker.process.pid) / 1024, outcome))
        finally:
            for sock in held:
                sock.close()
            broker.stop()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", nargs="+", choices=BROKERS, default=list(BROKERS))
    args = parser.parse_args()
    results: dict[str, list[Row]] = {}
    with tempfile.TemporaryDirectory(prefix="kubmesh-attacks-") as tmp:
        for kind in args.brokers:
            results[kind] = measure(kind, Path(tmp))
    print(f"{'attack':<30} {'broker':<10} {'RSS before MB':>13} {'after MB':>9} {'peak MB':>8}  outcome")
    for kind, rows in results.items():
        for name, before, after, peak, outcome in rows:
            print(f"{name:<30} {kind:<10} {before:13.1f} {after:9.1f} {peak:8.1f}  {outcome}")
    if {"embedded", "mosquitto"} <= results.keys():
        for ours, theirs in zip(results["embedded"], results["mosquitto"], strict=True):
            growth = [max(row[3] - row[1], 0.1) for row in (ours, theirs)]
            print(f"{ours[0]}: peak growth embedded/mosquitto {ratio(*growth)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
