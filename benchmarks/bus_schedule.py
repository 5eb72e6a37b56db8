"""16 controllers on one RS-485 bus: the poll cycle against its wire-time bound, and requests per unit per poll.

A real serial pair (socat ptys) at 9600 8N1: ``kubmesh simulate --units 1..16 --serial … --pace`` on one
end (each reply as late as its frames would be on a real line: a pty does not pace bytes), one agent
with 16 controllers on the other, every house with its own identity on the embedded broker. The
figures come from what the agent publishes: each house's heartbeat says the newest cycle's time
(``cycle_s``) and what its frames take on the line (``cycle_wire_s``, the bound no master can beat);
the merged ``/metrics`` gives each house's Modbus requests and polls. The peer is that bound,
measured in the same run: ratio = cycle time / wire time. A second run with a poll interval shorter
than the bound shows the overrun said in the heartbeat.

    python benchmarks/bus_schedule.py [--units 16] [--cycles 5]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.identities import IdentityStore, Role
from tests.helpers import MqttWatcher, ServiceProcess, free_port, wait_until


def run_bus(folder: Path, units: int, cycles: int, poll_interval: float) -> dict[str, Any]:
    folder.mkdir()
    data = folder / "data"
    store = IdentityStore(data)
    admin = store.add("admin", Role.ADMIN)
    houses = [f"house-{unit:02d}" for unit in range(1, units + 1)]
    identities = {house: store.add(house, Role.FARM, owner="agro-1") for house in houses}
    port = free_port()
    broker = ServiceProcess(["broker", "--data-dir", str(data), "--mqtt-host", "127.0.0.1", "--mqtt-port", str(port)],
                            folder / "broker.log").wait_port(port)
    a, b = folder / "ttyA", folder / "ttyB"
    socat = subprocess.Popen(["socat", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
                             stderr=subprocess.DEVNULL)
    wait_until(lambda: a.exists() and b.exists(), 5, what="the socat serial pair")
    simulator = ServiceProcess(["simulate", "--units", ",".join(str(u) for u in range(1, units + 1)),
                                "--serial", str(a), "--baudrate", "9600", "--pace", "--log-level", "WARNING"],
                               folder / "simulator.log")
    config = folder / "farm_config.yaml"
    config.write_text(yaml.safe_dump({
        "farm": {"owner_id": "agro-1", "site": "Агрофирма Север"},
        "modbus": {"url": f"rtu://{b}?baudrate=9600&parity=N&stopbits=1", "poll_interval": poll_interval},
        "controllers": [{"id": house, "unit": unit, "mqtt_password": identities[house].password}
                        for unit, house in enumerate(houses, start=1)],
        "mqtt": {"url": f"mqtt://127.0.0.1:{port}"},
        "discovery": {"heartbeat_interval": 1},
        "homeassistant": {"discovery": False},
    }, allow_unicode=True), encoding="utf-8")
    api_port = free_port()
    watcher = MqttWatcher(port, admin.username, admin.password, "kub/farms/+/heartbeat")
    agent = ServiceProcess(["farm-agent", "--config", str(config), "--data-dir", str(data), "--host", "127.0.0.1",
                            "--port", str(api_port)], folder / "agent.log").wait_port(api_port)
    try:
        def heartbeats() -> list[dict[str, Any]]:
            return [watcher.last(f"kub/farms/{house}/heartbeat") or {} for house in houses]

        wait_until(lambda: all(h.get("polls_ok", 0) >= 2 for h in heartbeats()), 120, what="every unit polled twice")
        first = metrics(api_port)
        started = time.monotonic()
        wait_until(lambda: min(h.get("polls_ok", 0) for h in heartbeats()) >= 2 + cycles,
                   cycles * max(poll_interval, units * 0.25) * 3 + 60, what=f"{cycles} more cycles")
        elapsed = time.monotonic() - started
        last = metrics(api_port)
        polls = sum(last["polls"].values()) - sum(first["polls"].values())
        requests = sum(last["requests"].values()) - sum(first["requests"].values())
        beat = heartbeats()[0]
        return {"cycle_s": beat["cycle_s"], "wire_s": beat["cycle_wire_s"], "overrun": beat["overrun"],
                "requests_per_poll": requests / max(1, polls), "polls": polls, "elapsed": elapsed,
                "failed": sum(h.get("polls_failed", 0) for h in heartbeats())}
    finally:
        watcher.close()
        agent.stop()
        simulator.stop()
        socat.terminate()
        socat.wait(5)
        broker.stop()


def metrics(port: int) -> dict[str, dict[str, float]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    found: dict[str, dict[str, float]] = {"polls": {}, "requests": {}}
    for farm, value in re.findall(r'kubmesh_agent_polls_total\{farm="([^"]+)",result="ok"\} (\S+)', text):
        found["polls"][farm] = float(value)
    for farm, value in re.findall(r'kubmesh_modbus_transactions_total\{farm="([^"]+)"\} (\S+)', text):
        found["requests"][farm] = float(value)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--units", type=int, default=16)
    parser.add_argument("--cycles", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        fits = run_bus(Path(folder) / "fits", args.units, args.cycles, poll_interval=5.0)
        short = run_bus(Path(folder) / "short", args.units, 2, poll_interval=1.0)
    print(f"{args.units} KUB-1063 on one RS-485 bus at 9600 8N1 (socat pty pair, simulator paced to the wire)\n")
    print(f"{'poll interval':<14} {'cycle s':>8} {'wire s':>7} {'ratio':>6} {'requests/unit/poll':>19} {'overrun':>8}"
          f" {'failed polls':>13}")
    for interval, result in ((5.0, fits), (1.0, short)):
        print(f"{interval:<14g} {result['cycle_s']:>8.2f} {result['wire_s']:>7.2f}"
              f" {result['cycle_s'] / result['wire_s']:>6.2f} {result['requests_per_poll']:>19.2f}"
              f" {result['overrun']!s:>8} {result['failed']:>13}")
    print(f"\none block read per unit is {fits['wire_s'] / args.units:.3f} s on the wire; "
          f"the bus polls {args.units} units in {fits['cycle_s']:.2f} s")


if __name__ == "__main__":
    main()
