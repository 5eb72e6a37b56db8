"""No reading lost: real broker, discovery, simulator and agent processes, and the faults rural links,
restarts and crashes bring. After each, the history holds every reading the agent numbered, once."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from common.identities import Role
from contract.payloads import format_ts, parse_ts, utc_now
from tests.conftest import RunningBroker, RunningMosquitto
from tests.farm_system import Agent, Simulator, http_json
from tests.helpers import MqttWatcher, ServiceProcess, wait_until
from tests.tcp_proxy import TcpProxy
from tests.test_discovery import Discovery, start_discovery

FARM = "farm-042"
LAST_HOUR = format_ts(utc_now() - timedelta(hours=1))
FAST = {"MAX_INTERVAL": "0", "HEARTBEAT_INTERVAL": "1", "KUBMESH_RECONNECT_MAX": "1"}  # every poll is a reading


def hold(seconds: float) -> None:
    """The length of an outage is part of the scenario, not a wait for a condition."""
    time.sleep(seconds)


@dataclass
class Rig:
    """A farm behind a TCP proxy, a broker, and a discovery node recording its history."""

    tmp_path: Path
    broker: RunningBroker
    simulator: Simulator
    proxy: TcpProxy
    discovery: Discovery
    agent: Agent

    def history(self) -> dict[str, Any]:
        status, farm = self.discovery.get(f"/api/farms/{FARM}")
        return farm["history"] if status == 200 else {}  # type: ignore[no-any-return]

    def newest_seq(self) -> int:
        return int(http_json(f"http://127.0.0.1:{self.agent.api_port}/api/data")["seq"])

    def caught_up(self) -> dict[str, Any] | None:
        """The history when it holds seq 1 to the agent's newest reading and the agent's queue is empty."""
        newest = self.newest_seq()
        history = self.history()
        health = self.agent.health()
        if health["backlog"] == 0 and history.get("first_seq") == 1 and history.get("missing") == 0 \
                and history.get("last_seq", 0) >= newest:
            return history
        return None

    def restart_broker(self) -> None:
        self.broker.process = ServiceProcess(
            ["broker", "--data-dir", str(self.broker.data_dir), "--mqtt-host", "127.0.0.1",
             "--mqtt-port", str(self.broker.port)],
            self.tmp_path / f"broker-{time.monotonic_ns()}.log",
        ).wait_port(self.broker.port)

    def restart_agent(self) -> None:
        self.agent.start()


def make_rig(broker: RunningBroker, tmp_path: Path, poll: float, env: dict[str, str] | None = None) -> Rig:
    simulator = Simulator(tmp_path).start()
    proxy = TcpProxy(broker.port).start()
    service = broker.add("discovery", Role.DISCOVERY)
    discovery = start_discovery(tmp_path, tmp_path / "discovery-data", mqtt_port=broker.port,
                                env={"MQTT_URL": broker.url(service), "KUBMESH_RECONNECT_MAX": "1"})
    wait_until(lambda: discovery.get("/health")[1]["broker"] == "connected", 10, what="discovery connected")
    credentials = broker.add(FARM, Role.FARM, owner="owner-a")
    url = f"mqtt://{credentials.username}:{credentials.password}@127.0.0.1:{proxy.port}"
    agent = Agent(tmp_path, tmp_path / "agent-data", FARM, url, simulator.modbus_url, poll_interval=poll,
                  extra_env={**FAST, **(env or {})}).start()
    rig = Rig(tmp_path, broker, simulator, proxy, discovery, agent)
    wait_until(lambda: rig.history().get("readings", 0) >= 3, 15, what="the first readings in the history")
    return rig


@pytest.fixture
def rig_factory(broker: RunningBroker, tmp_path: Path) -> Iterator[Any]:
    made: list[Rig] = []

    def make(poll: float, env: dict[str, str] | None = None) -> Rig:
        made.append(make_rig(broker, tmp_path, poll, env))
        return made[-1]

    yield make
    for rig in made:
        rig.agent.stop()
        rig.discovery.process.stop()
        rig.proxy.close()
        rig.simulator.stop()


def assert_complete(rig: Rig, timeout: float = 30) -> dict[str, Any]:
    history = wait_until(rig.caught_up, timeout, what="every reading in the history")
    status, points = rig.discovery.get(f"/api/farms/{FARM}/history?name=temp_inside&from={LAST_HOUR}")
    assert status == 200 and len(points["points"]) == history["readings"] == history["last_seq"]
    return history


def test_broker_killed_for_15_s_and_restarted_empty_loses_no_reading_at_1_s(
    rig_factory: Any, broker: RunningBroker
) -> None:
    rig: Rig = rig_factory(1.0)
    broker.process.kill()
    outage_start = time.time()
    wait_until(lambda: rig.agent.health()["broker"] == "disconnected", 10, what="the agent noticing")
    hold(15)
    assert rig.agent.health()["backlog"] >= 10  # the outage's readings wait on disk
    rig.restart_broker()
    outage_end = time.time()
    watcher = MqttWatcher(broker.port, broker.admin.username, broker.admin.password,
                          [f"kub/farms/{FARM}/#", "kub/discovery/status"])
    try:
        assert_complete(rig)
        polls = rig.agent.health()["polls_ok"]
        assert polls <= rig.newest_seq() <= polls + 1  # every poll gave a numbered reading
        # 1 s resolution across the outage: no two neighbouring readings more than a poll and a half apart
        _, body = rig.discovery.get(f"/api/farms/{FARM}/history?name=temp_inside&from={LAST_HOUR}")
        times = [parse_ts(p["ts"]).timestamp() for p in body["points"]]
        inside = [t for t in times if outage_start - 2 <= t <= outage_end + 2]
        assert len(inside) >= 15 and max(b - a for a, b in itertools.pairwise(inside)) <= 1.5
        # the new broker had nothing retained: agent and discovery published it all again
        for kind in ("status", "meta", "heartbeat", "state", "alarms"):
            wait_until(lambda kind=kind: watcher.last(f"kub/farms/{FARM}/{kind}"), 5, what=f"retained {kind}")
        assert watcher.last(f"kub/farms/{FARM}/status")["state"] == "online"
        assert watcher.last("kub/discovery/status") == "online"
        wait_until(lambda: rig.discovery.get(f"/api/farms/{FARM}")[1]["online"], 5, what="farm online again")
    finally:
        watcher.close()


def test_agent_killed_with_a_queue_on_disk_replays_it_after_restart(rig_factory: Any) -> None:
    rig: Rig = rig_factory(0.3)
    rig.proxy.cut()
    queued = wait_until(lambda: (b := rig.agent.health()["backlog"]) >= 8 and b, 15, what="a backlog")
    assert rig.agent.process is not None
    rig.agent.process.kill()
    rig.proxy.restore()
    rig.restart_agent()
    history = assert_complete(rig)
    assert history["last_seq"] > queued
    wait_until(lambda: "replayed" in rig.agent.process.output(), 5, what="the replay logged")


@pytest.mark.parametrize("how", ["stopped", "killed"])
def test_discovery_restart_loses_nothing_through_an_external_broker(
    mosquitto: RunningMosquitto, tmp_path: Path, how: str
) -> None:
    mosquitto.add_user("discovery", "discovery-secret")
    mosquitto.add_user(FARM, "farm-secret")
    simulator = Simulator(tmp_path).start()
    env = {"MQTT_URL": mosquitto.url("discovery", "discovery-secret"), "KUBMESH_RECONNECT_MAX": "1"}
    data = tmp_path / "discovery-data"
    discovery = start_discovery(tmp_path, data, env=env, mqtt_port=mosquitto.port)
    agent = Agent(tmp_path, tmp_path / "agent-data", FARM, mosquitto.url(FARM, "farm-secret"),
                  simulator.modbus_url, poll_interval=0.3, extra_env=FAST)
    try:
        wait_until(lambda: discovery.get("/health")[1]["broker"] == "connected", 10, what="discovery connected")
        agent.start()
        wait_until(lambda: discovery.get(f"/api/farms/{FARM}")[1]["history"]["readings"] >= 3, 15, what="readings")
        # killed: what it had received but not yet committed was never acknowledged, so Mosquitto sends it again
        if how == "killed":
            discovery.process.kill()
        else:
            discovery.process.stop()
        stopped_at = int(http_json(f"http://127.0.0.1:{agent.api_port}/api/data")["seq"])
        wait_until(lambda: int(http_json(f"http://127.0.0.1:{agent.api_port}/api/data")["seq"]) >= stopped_at + 10,
                   15, what="readings while discovery is away")
        # Mosquitto queues them for discovery's session, but only the history's confirmation lets them go
        assert agent.health()["backlog"] >= 10
        discovery = start_discovery(tmp_path, data, env=env, mqtt_port=mosquitto.port)

        def complete() -> dict[str, Any] | None:
            newest = int(http_json(f"http://127.0.0.1:{agent.api_port}/api/data")["seq"])
            history = discovery.get(f"/api/farms/{FARM}")[1]["history"]
            ok = history["first_seq"] == 1 and history["missing"] == 0 and history["last_seq"] >= newest
            return history if ok else None

        history = wait_until(complete, 20, what="the readings queued by Mosquitto in the history")
        assert history["readings"] == history["last_seq"] > stopped_at + 10
    finally:
        agent.stop()
        discovery.process.stop()
        simulator.stop()


def test_queue_bound_drops_the_oldest_and_reports_exactly_how_many(
    rig_factory: Any, broker: RunningBroker
) -> None:
    rig: Rig = rig_factory(0.2, {"QUEUE_MAX_READINGS": "10"})
    watcher = MqttWatcher(broker.port, broker.admin.username, broker.admin.password, f"kub/farms/{FARM}/#")
    try:
        in_flight = rig.agent.health()["backlog"]  # sent, perhaps stored, not confirmed yet
        rig.proxy.cut()
        wait_until(lambda: rig.agent.health()["dropped"] >= 10, 20, what="the bound reached")
        rig.proxy.restore()
        wait_until(lambda: rig.agent.health()["backlog"] == 0 and rig.agent.health()["broker"] == "connected", 20,
                   what="the backlog replayed")
        dropped = rig.agent.health()["dropped"]
        events = wait_until(lambda: [e for e in watcher.payloads(f"kub/farms/{FARM}/events")
                                     if e["kind"] == "backlog_dropped"], 10, what="the drop reported")
        assert sum(e["detail"]["dropped"] for e in events) == dropped
        wait_until(lambda: watcher.last(f"kub/farms/{FARM}/heartbeat")["dropped"] == dropped, 5, what="heartbeat")

        def settled() -> dict[str, Any] | None:
            history = rig.history()
            # a dropped reading the history had stored but not yet confirmed when the link went is not missing
            missing_dropped = dropped - in_flight - 1 <= history["missing"] <= dropped
            return history if history["last_seq"] >= rig.newest_seq() and missing_dropped else None

        history = wait_until(settled, 15, what="history with the dropped readings missing")
        assert history["gaps"] == 1 and history["first_seq"] == 1  # the oldest of the outage went, in one run
    finally:
        watcher.close()


@pytest.mark.slow
def test_link_silent_for_60_s_is_found_by_keepalive_and_nothing_is_lost(
    rig_factory: Any, broker: RunningBroker
) -> None:
    rig: Rig = rig_factory(1.0)
    watcher = MqttWatcher(broker.port, broker.admin.username, broker.admin.password, f"kub/farms/{FARM}/status")
    try:
        rig.proxy.stall()
        # half-open: no FIN either way; the broker sends the agent's will after 1.5 × keepalive (5 s)
        wait_until(lambda: watcher.last(f"kub/farms/{FARM}/status")["state"] == "offline", 15, what="the will")
        wait_until(lambda: rig.agent.health()["broker"] == "disconnected", 20, what="the agent's keepalive")
        hold(60)
        assert rig.agent.health()["backlog"] >= 50
        rig.proxy.restore()
        assert_complete(rig, 60)
        wait_until(lambda: watcher.last(f"kub/farms/{FARM}/status")["state"] == "online", 10, what="online again")
    finally:
        watcher.close()
