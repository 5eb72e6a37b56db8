"""Bytes one controller's house sends and receives a day on its uplink: before and after the lean uplink,
and with the history's confirmation on against off.

Two measurements in one run:

1. **A day, polled.** The simulated KUB-1063 (its climate model, its sensor noise, on a clock that
   steps 5 s per poll) is read 17,280 times, decoded as the agent decodes it, and each poll goes
   through the agent's own publishing rule (``farm_agent.report``: deadbands, ``max_interval``);
   every reading published is encoded as the agent encodes it. On the wire: each QoS 1 PUBLISH
   (fixed header, topic, packet id, payload) and its 4-byte PUBACK, a heartbeat every
   ``HEARTBEAT_INTERVAL``, and a PINGREQ/PINGRESP pair for every keepalive period without a
   message. A consumer keeps what it was sent; after every poll, a value that differs from what the
   consumer holds by more than its deadband (or a status that differs) is a **missed change**.
   "before" is the encoding and deadbands of the agent before the lean uplink (every status listed,
   the old deadbands, a heartbeat every 30 s); "after" is today's agent and profile. "confirmation on"
   adds the history's committed mark the farm receives for every state (``kub/discovery/committed/{farm}``,
   a QoS 0 PUBLISH: no PUBACK goes back up; the discovery node commits every 0.25 s, so at 5 s polling
   each state is confirmed on its own) and the heartbeat's ``held_from``; "off" is the agent before it.
2. **The real wire.** A real agent polls a real simulator through a TCP proxy in front of the
   embedded broker of a real discovery node (so the confirmations flow); the proxy counts every byte
   both ways. The mean state and heartbeat PUBLISH it
   measures checks the sizes the day model assumes (ratio), and so does the share of bytes that is
   framing and acknowledgements.

TCP/IP and TLS overhead are not counted (they depend on the link, not on the agent).

    python benchmarks/agent_bytes.py [--wire-polls 60]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.identities import IdentityStore, Role
from contract.payloads import Committed, Heartbeat, Reading, SensorStatus, encode
from contract.topics import Topics
from farm_agent.blocks import plan_blocks
from farm_agent.decode import decode_values
from farm_agent.profile import Profile, load_profile
from farm_agent.report import make_reading, worth_publishing
from farm_agent.settings import AgentSettings
from farm_agent.simulator.device import Kub1063Simulator
from tests.farm_system import Agent, Simulator
from tests.helpers import MqttWatcher, ServiceProcess, free_port, wait_until
from tests.tcp_proxy import TcpProxy

FARM = "farm-001"
POLL_S = 5.0
DAY_S = 86400
PUBACK = 4
PING_PAIR = 4  # PINGREQ and PINGRESP, two bytes each
KEEPALIVE_S = 30
BUDGET_MB = 3.0
# the agent before the lean uplink (ceec17b): its profile's deadbands, every status in a reading, heartbeat 30 s
BEFORE_DEADBANDS = {"pressure": 1.0, "humidity": 1.0, "co2": 50, "nh3": 1.0, "fan_output_base": 2,
                    "fan_output_tunnel": 2, "damper_output": 2, "ventilation_target": 2, "ventilation_level": 2,
                    "temp_target": 0.1, "temp_inside": 0.2, "temp_vent_activation": 0.1}
BEFORE_HEARTBEAT_S = 30


def publish_bytes(topic: str, payload: bytes, qos: int = 1) -> int:
    """A PUBLISH on the wire: fixed header with its remaining length, topic, packet id (QoS 1), payload."""
    remaining = 2 + len(topic.encode()) + (2 if qos else 0) + len(payload)
    length_bytes = 1 if remaining < 128 else 2 if remaining < 16384 else 3
    return 1 + length_bytes + remaining


@dataclass
class Day:
    states: int
    state_bytes: int  # PUBLISH bytes of the states
    heartbeat_bytes: int
    acks_and_pings: int
    missed: int
    confirm_bytes: int = 0  # the history's committed marks, received

    @property
    def total(self) -> int:
        return self.state_bytes + self.heartbeat_bytes + self.acks_and_pings + self.confirm_bytes

    @property
    def mean_state(self) -> float:
        return self.state_bytes / max(1, self.states)


def with_deadbands(profile: Profile, deadbands: Mapping[str, float]) -> Profile:
    values = [spec.model_copy(update={"deadband": deadbands.get(spec.name, spec.deadband)}) for spec in profile.values]
    return profile.model_copy(update={"values": values})


def before_bits(values: Mapping[str, int | float | None]) -> dict[str, dict[str, bool]]:
    """The labelled bits the agent sent in every reading before the lean uplink (the profile labels one)."""
    raw = values.get("digital_outputs_2")
    return {"digital_outputs_2": {"alarm_relay": bool(int(raw) >> 7 & 1)}} if raw is not None else {}


def heartbeat_payload(before: bool, confirm: bool = False) -> bytes:
    """A heartbeat as a house of a 3-unit bus sends it (before: as a single-controller agent sent it)."""
    heartbeat = Heartbeat(ts=datetime.now(UTC), uptime_s=86399.9, polls_ok=17279, polls_failed=0, modbus="ok",
                          backlog=0, dropped=0, bytes_per_hour=99999)
    if not before:
        heartbeat = heartbeat.model_copy(update={"cycle_s": 0.612, "cycle_wire_s": 0.6, "bus_units": 3,
                                                 "overrun": False})
    if confirm:
        heartbeat = heartbeat.model_copy(update={"held_from": 17280})
    return encode(heartbeat)


def poll_a_day(profile: Profile, *, before: bool, max_interval: float, heartbeat_s: float, seed: int = 7,
               confirm: bool = False) -> Day:
    topics = Topics()
    state_topic = topics.state(FARM)
    now = [1_764_547_200.0]  # a simulated clock, stepped one poll at a time
    simulator = Kub1063Simulator(profile, seed=seed, clock=lambda: now[0])
    blocks = plan_blocks(profile.input_registers())
    shown_values: dict[str, int | float | None] | None = None
    shown_status: dict[str, SensorStatus] | None = None
    published_at = -1e18
    states = state_bytes = missed = confirm_bytes = 0
    sent_at: list[float] = []
    for poll in range(int(DAY_S / POLL_S)):
        now[0] += POLL_S
        registers: dict[int, int] = {}
        for block in blocks:
            registers.update(zip(range(block.start, block.end), simulator.read("input", block.start, block.count),
                                 strict=True))
        values, status = decode_values(profile, registers)
        due = now[0] - published_at >= max_interval
        if due or worth_publishing(profile, shown_values, shown_status, values, status):
            ts = datetime.fromtimestamp(now[0], UTC)
            reading = make_reading(ts, poll, values, status)
            if before:  # every status listed and the labelled bits, as the agent sent them
                reading = Reading(ts=ts, seq=poll, values=values, status=status, bits=before_bits(values))
            state_bytes += publish_bytes(state_topic, encode(reading))
            if confirm:
                confirm_bytes += publish_bytes(topics.committed(FARM), encode(Committed(seq=poll)), qos=0)
            states += 1
            published_at = now[0]
            sent_at.append(now[0])
            shown_values, shown_status = dict(reading.values), dict(status)  # what the consumer now holds
        elif shown_values is not None and shown_status is not None:
            missed += count_missed(profile, shown_values, shown_status, values, status)
    heartbeats = int(DAY_S / heartbeat_s)
    heartbeat_bytes = heartbeats * publish_bytes(topics.heartbeat(FARM), heartbeat_payload(before, confirm))
    sent_at += [1_764_547_200.0 + i * heartbeat_s for i in range(heartbeats)]
    sent_at.sort()
    pings = sum(int((b - a) // KEEPALIVE_S) for a, b in itertools.pairwise(sent_at))
    return Day(states, state_bytes, heartbeat_bytes, (states + heartbeats) * PUBACK + pings * PING_PAIR, missed,
               confirm_bytes)


def count_missed(profile: Profile, shown: Mapping[str, int | float | None], shown_status: Mapping[str, SensorStatus],
                 values: Mapping[str, int | float | None], status: Mapping[str, SensorStatus]) -> int:
    """Values the consumer shows wrong by more than their deadband, after a poll the agent did not publish."""
    missed = 0
    for name, value in values.items():
        before = shown.get(name)
        spec = profile.values_by_name[name]
        if status.get(name, "ok") != shown_status.get(name, "ok") or (value is None) != (before is None):
            missed += 1
        elif value is not None and before is not None:
            deadband = spec.deadband if spec.type in ("u16", "s16") else 0.0
            missed += abs(value - before) > deadband + 1e-9
    return missed


def measure_wire(folder: Path, polls: int, poll: float) -> dict[str, float]:
    """A real agent through a byte-counting proxy: the mean state and heartbeat PUBLISH, and all bytes both ways."""
    data = folder / "data"
    store = IdentityStore(data)
    admin, farm = store.add("admin", Role.ADMIN), store.add(FARM, Role.FARM)
    port, api_port = free_port(), free_port()
    broker = ServiceProcess(["discovery", "--data-dir", str(data), "--mqtt-host", "127.0.0.1", "--mqtt-port",
                             str(port), "--host", "127.0.0.1", "--port", str(api_port)],
                            folder / "discovery.log").wait_port(port)
    proxy = TcpProxy(port).start()
    simulator = Simulator(folder).start()
    committed = Topics().committed(FARM)
    watcher = MqttWatcher(port, admin.username, admin.password, [f"kub/farms/{FARM}/#", committed])
    agent = Agent(folder, data, FARM, f"mqtt://{FARM}:{farm.password}@127.0.0.1:{proxy.port}", simulator.modbus_url,
                  poll_interval=poll, extra_env={"MAX_INTERVAL": "60", "HEARTBEAT_INTERVAL": "2"})
    try:
        agent.start()

        def polls_ok() -> int:
            heartbeat = watcher.last(f"kub/farms/{FARM}/heartbeat")
            return int(heartbeat["polls_ok"]) if heartbeat else 0

        wait_until(lambda: polls_ok() > 5, 30, what="the agent polling")
        with watcher.lock:
            start = len(watcher.messages)
        up, down = proxy.bytes_up, proxy.bytes_down
        first = polls_ok()
        wait_until(lambda: polls_ok() >= first + polls, polls * poll * 3 + 30, interval=0.2, what=f"{polls} polls")
        with watcher.lock:
            window = watcher.messages[start:]
        wire = proxy.bytes_up - up + proxy.bytes_down - down
        sizes: dict[str, list[int]] = {"state": [], "heartbeat": []}
        marks = [publish_bytes(t, p, qos=0) for t, p, _ in window if t == committed]
        window = [(t, p, r) for t, p, r in window if t != committed]
        for topic, payload, _ in window:
            kind = topic.rsplit("/", 1)[-1]
            if kind in sizes:
                sizes[kind].append(publish_bytes(topic, payload))
        published = sum(publish_bytes(t, p) for t, p, _ in window)
        return {
            "mean_state": sum(sizes["state"]) / max(1, len(sizes["state"])),
            "mean_heartbeat": sum(sizes["heartbeat"]) / max(1, len(sizes["heartbeat"])),
            "wire": wire,
            "published": published + sum(marks),
            "marks_per_state": len(marks) / max(1, len(sizes["state"])),
            "mean_mark": sum(marks) / max(1, len(marks)),
        }
    finally:
        watcher.close()
        agent.stop()
        simulator.stop()
        proxy.close()
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wire-polls", type=int, default=60, help="polls of the real-wire check (0: skip it)")
    parser.add_argument("--poll", type=float, default=0.2, help="poll interval of the real-wire check")
    args = parser.parse_args()
    started = time.monotonic()
    settings_default = AgentSettings(farm_id=FARM)
    profile = load_profile()
    before = poll_a_day(with_deadbands(profile, BEFORE_DEADBANDS), before=True, max_interval=60,
                        heartbeat_s=BEFORE_HEARTBEAT_S)
    after = poll_a_day(profile, before=False, max_interval=settings_default.max_interval,
                       heartbeat_s=settings_default.heartbeat_interval)
    confirmed = poll_a_day(profile, before=False, max_interval=settings_default.max_interval,
                           heartbeat_s=settings_default.heartbeat_interval, confirm=True)
    every_poll = poll_a_day(profile, before=False, max_interval=0, heartbeat_s=settings_default.heartbeat_interval,
                            confirm=True)
    print(f"One controller, polled every {POLL_S:g} s for a day ({int(DAY_S / POLL_S)} polls), bytes on its uplink "
          "(MQTT: PUBLISH, PUBACK, PING)\n")
    print(f"{'agent':<34} {'states':>7} {'B/state':>8} {'states MB':>10} {'heartb. MB':>11} {'acks+pings':>11}"
          f" {'confirm MB':>11} {'MB/day':>7} {'missed':>7}")
    rows = (("before (ceec17b)", before), ("after: by exception, no confirm.", after),
            ("after: by exception, confirmation", confirmed), ("after: every poll, confirmation", every_poll))
    for name, day in rows:
        print(f"{name:<34} {day.states:>7} {day.mean_state:>8.0f} {day.state_bytes / 1e6:>10.2f}"
              f" {day.heartbeat_bytes / 1e6:>11.2f} {day.acks_and_pings / 1e6:>11.3f}"
              f" {day.confirm_bytes / 1e6:>11.2f} {day.total / 1e6:>7.2f} {day.missed:>7}")
    print(f"\nconfirmation on/off: {confirmed.total / after.total:.2f} ({confirmed.total / 1e6:.2f} against"
          f" {after.total / 1e6:.2f} MB/day); farm to broker alone (states, heartbeats, their PUBACKs and pings):"
          f" {(confirmed.total - confirmed.confirm_bytes) / after.total:.3f}")
    print(f"\nafter/before: {after.total / before.total:.2f} ({before.total / after.total:.1f}x fewer bytes); "
          f"budget {BUDGET_MB:g} MB/day: {'met' if after.total <= BUDGET_MB * 1e6 else 'NOT met'}; "
          f"changes beyond a deadband missed: {after.missed}")
    if args.wire_polls:
        with tempfile.TemporaryDirectory() as folder:
            wire = measure_wire(Path(folder), args.wire_polls, args.poll)
        print(f"\nreal wire ({args.wire_polls} polls of a real agent through the proxy): state PUBLISH "
              f"{wire['mean_state']:.0f} B (day model {after.mean_state:.0f} B, ratio "
              f"{wire['mean_state'] / after.mean_state:.2f}), heartbeat {wire['mean_heartbeat']:.0f} B; all bytes "
              f"both ways / PUBLISH bytes = {wire['wire'] / max(1, wire['published']):.2f}; committed marks "
              f"{wire['marks_per_state']:.2f} per state, {wire['mean_mark']:.0f} B each")
    print(f"({time.monotonic() - started:.0f} s to measure)")


if __name__ == "__main__":
    main()
