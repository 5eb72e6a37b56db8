"""Resident memory of a real farm agent against the 50 MB a Raspberry-Pi-class box can give it.

A real ``kubmesh farm-agent`` polls a real simulator (``kubmesh simulate``) every second and publishes
through the embedded broker (``kubmesh broker``), with Home Assistant discovery on and its local HTTP
API scraped (``/health``, ``/api/data``, ``/metrics``) every few seconds, as a probe and Prometheus
would. After a warm-up its RSS is sampled from ``/proc/PID/status`` once a second: the steady figure
is the median of the samples, ``VmHWM`` the peak the kernel saw.

    python benchmarks/agent_memory.py [--seconds 30] [--poll 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.identities import IdentityStore, Role
from tests.farm_system import Agent, Simulator
from tests.helpers import MqttWatcher, ServiceProcess, free_port, wait_until

FARM = "farm-memory"
TARGET_KB = 50 * 1024
WARM_UP_S = 5.0
SCRAPE_EVERY_S = 5.0


def proc_status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def scrape(port: int) -> None:
    for path in ("/health", "/api/data", "/metrics"):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            response.read()


def measure(folder: Path, seconds: float, poll: float) -> dict[str, float]:
    data = folder / "data"
    store = IdentityStore(data)
    admin, farm = store.add("admin", Role.ADMIN), store.add(FARM, Role.FARM)
    port = free_port()
    broker = ServiceProcess(["broker", "--data-dir", str(data), "--mqtt-host", "127.0.0.1", "--mqtt-port", str(port)],
                            folder / "broker.log").wait_port(port)
    simulator = Simulator(folder).start()
    watcher = MqttWatcher(port, admin.username, admin.password, f"kub/farms/{FARM}/heartbeat")
    agent = Agent(folder, folder / "agent-data", FARM, f"mqtt://{FARM}:{farm.password}@127.0.0.1:{port}",
                  simulator.modbus_url, poll_interval=poll, extra_env={"HEARTBEAT_INTERVAL": "5"})
    try:
        agent.start()
        assert agent.process is not None
        pid = agent.process.proc.pid
        wait_until(lambda: agent.health()["status"] == "ok", 30, what="the agent polling and connected")
        started = time.monotonic()
        samples: list[int] = []
        next_scrape = started
        while (elapsed := time.monotonic() - started) < seconds:
            if time.monotonic() >= next_scrape:
                scrape(agent.api_port)
                next_scrape += SCRAPE_EVERY_S
            if elapsed >= WARM_UP_S:
                samples.append(proc_status_kb(pid, "VmRSS"))
            time.sleep(1.0)  # the sampling period of the figure, not a wait for a condition
        polls = int(agent.health()["polls_ok"])
        return {
            "polls": polls,
            "steady_kb": statistics.median(samples),
            "last_kb": samples[-1],
            "hwm_kb": proc_status_kb(pid, "VmHWM"),
        }
    finally:
        watcher.close()
        agent.stop()
        simulator.stop()
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--poll", type=float, default=1.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        result = measure(Path(folder), args.seconds, args.poll)
    print(f"farm agent resident memory, polling every {args.poll:g} s for {args.seconds:g} s "
          f"({result['polls']:.0f} polls), against the {TARGET_KB / 1024:.0f} MB target\n")
    print(f"{'figure':<28} {'MB':>7} {'of target':>10}")
    for name, key in (("steady RSS (median VmRSS)", "steady_kb"), ("last VmRSS", "last_kb"),
                      ("peak (VmHWM)", "hwm_kb")):
        print(f"{name:<28} {result[key] / 1024:>7.1f} {result[key] / TARGET_KB:>10.2f}")


if __name__ == "__main__":
    main()
