"""Resident memory of a real farm agent against the 50 MB a Raspberry-Pi-class box can give it.

A real ``kubmesh farm-agent`` polls a real simulator (``kubmesh simulate``) every second and publishes
through the embedded broker (``kubmesh broker``), with Home Assistant discovery on and its local HTTP
API scraped (``/health``, ``/api/data``, ``/metrics``) every few seconds, as a probe and Prometheus
would. After a warm-up its RSS is sampled from ``/proc/PID/status`` once a second: the steady figure
is the median of the samples, ``VmHWM`` the peak the kernel saw. With ``--sms`` a second agent is
measured in the same run with the SMS fallback on (``SMS_DEVICE`` on a simulated GSM modem, so
python-gammu is loaded and the modem asked every few seconds), against the first as its peer. With
``--houses N`` the agent serves a site: N controllers on one simulated bus (``simulate --units``),
each house with its own identity, MQTT session, queue and extensions.

    python benchmarks/agent_memory.py [--seconds 30] [--poll 1] [--sms] [--houses 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.identities import IdentityStore, Role
from tests.farm_system import Agent, Simulator
from tests.gsm_modem import SimulatedModem
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


def measure(folder: Path, seconds: float, poll: float, sms: bool = False, houses: int = 1) -> dict[str, float]:
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "data"
    store = IdentityStore(data)
    admin, farm = store.add("admin", Role.ADMIN), store.add(FARM, Role.FARM)
    port = free_port()
    broker = ServiceProcess(["broker", "--data-dir", str(data), "--mqtt-host", "127.0.0.1", "--mqtt-port", str(port)],
                            folder / "broker.log").wait_port(port)
    simulator = Simulator(folder, ["--units", ",".join(str(u) for u in range(1, houses + 1))]).start()
    watcher = MqttWatcher(port, admin.username, admin.password, f"kub/farms/{FARM}/heartbeat")
    env = {"HEARTBEAT_INTERVAL": "5"}
    modem = SimulatedModem(folder / "modem")
    if sms:
        modem.plug()
        env |= {"SMS_DEVICE": str(modem.device), "SMS_NUMBERS": "+79001234567", "KUBMESH_SMS_CHECK_INTERVAL": "5"}
    agent = Agent(folder, folder / "agent-data", FARM, f"mqtt://{FARM}:{farm.password}@127.0.0.1:{port}",
                  simulator.modbus_url, poll_interval=poll, extra_env=env)
    if houses > 1:  # a site: the first house is FARM, the others house-2 …, all on the simulator's bus
        ids = [FARM, *(f"house-{unit}" for unit in range(2, houses + 1))]
        passwords = [farm.password, *(store.add(house, Role.FARM).password for house in ids[1:])]
        config = folder / "farm_config.yaml"
        config.write_text(yaml.safe_dump({
            "farm": {"site": "memory site"}, "modbus": {"url": f"tcp://127.0.0.1:{simulator.port}?timeout=0.5"},
            "controllers": [{"id": house, "unit": unit, "mqtt_password": password}
                            for unit, (house, password) in enumerate(zip(ids, passwords, strict=True), start=1)],
            "mqtt": {"url": f"mqtt://127.0.0.1:{port}"}}))
        agent.process = ServiceProcess(
            ["farm-agent", "--config", str(config), "--data-dir", str(folder / "agent-data"), "--poll-interval",
             str(poll), "--host", "127.0.0.1", "--port", str(agent.api_port)],
            folder / "agent.log", env=env).wait_port(agent.api_port)

    def polls() -> int:
        health = agent.health()
        return sum(int(h["polls_ok"]) for h in health["houses"]) if houses > 1 else int(health["polls_ok"])

    try:
        if houses == 1:
            agent.start()
        assert agent.process is not None
        pid = agent.process.proc.pid
        wait_until(lambda: agent.health()["status"] == "ok", 30, what="the agent polling and connected")
        if sms:
            wait_until(lambda: agent.health()["sms"]["ok"], 30, what="the agent's modem ready")
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
        return {
            "polls": polls(),
            "steady_kb": statistics.median(samples),
            "last_kb": samples[-1],
            "hwm_kb": proc_status_kb(pid, "VmHWM"),
        }
    finally:
        watcher.close()
        agent.stop()
        simulator.stop()
        broker.stop()
        if sms:
            modem.unplug()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--poll", type=float, default=1.0)
    parser.add_argument("--sms", action="store_true", help="measure a second agent with the SMS fallback on")
    parser.add_argument("--houses", type=int, default=1, help="controllers the agent serves on one bus")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        result = measure(Path(folder) / "plain", args.seconds, args.poll, houses=args.houses)
        with_sms = measure(Path(folder) / "sms", args.seconds, args.poll, sms=True) if args.sms else None
    print(f"farm agent resident memory, {args.houses} house(s), polling every {args.poll:g} s for {args.seconds:g} s "
          f"({result['polls']:.0f} polls), against the {TARGET_KB / 1024:.0f} MB target\n")
    print(f"{'figure':<28} {'MB':>7} {'of target':>10}" + (f" {'SMS on MB':>10} {'of target':>10} {'on/off':>7}"
                                                           if with_sms else ""))
    for name, key in (("steady RSS (median VmRSS)", "steady_kb"), ("last VmRSS", "last_kb"),
                      ("peak (VmHWM)", "hwm_kb")):
        line = f"{name:<28} {result[key] / 1024:>7.1f} {result[key] / TARGET_KB:>10.2f}"
        if with_sms:
            line += (f" {with_sms[key] / 1024:>10.1f} {with_sms[key] / TARGET_KB:>10.2f}"
                     f" {with_sms[key] / result[key]:>7.2f}")
        print(line)


if __name__ == "__main__":
    main()
