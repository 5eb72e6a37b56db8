"""The fault matrix: every reading stored end to end, whatever fails between the farm and the history.

Real processes over loopback: a simulated KUB-1063, the farm agent, a broker (the embedded one, inside
discovery or on its own, or a Mosquitto configured only with the files ``kubmesh broker
export-mosquitto`` writes, persistence off) and the discovery node. Each case ends with the history
holding every reading the agent numbered, once: ``history.missing`` 0 from seq 1 to the agent's newest.
The long forms (60 s partitions, 7 days of backlog) are ``slow``; a short form of each fault runs by
default.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

from common.identities import Credentials, Role
from contract.payloads import Reading, encode, utc_now
from contract.topics import Topics
from farm_agent.queue import SEQ, ReadingQueue
from farm_agent.store import AgentStore
from tests.brokers import ExportedMosquitto, mosquitto_bus
from tests.conftest import RunningBroker
from tests.farm_system import Agent, Simulator, http_json
from tests.helpers import MqttWatcher, wait_until
from tests.tcp_proxy import TcpProxy
from tests.test_discovery import Discovery, start_discovery

FARMS = ("farm-051", "farm-052")
# CONFIRM_TIMEOUT: a reading the broker dropped on its way to the history (a live one beside a replay, past
# Mosquitto's small queue here) is sent again after this long; 5 s instead of 30 s fits the cases' minute
FAST = {"MAX_INTERVAL": "0", "HEARTBEAT_INTERVAL": "1", "KUBMESH_RECONNECT_MAX": "1", "KUBMESH_KEEPALIVE": "5",
        "CONFIRM_TIMEOUT": "5"}
QUEUED_FOR_OFFLINE = 5
DISCOVERY_ENV = {"KUBMESH_RECONNECT_MAX": "1", "KUBMESH_KEEPALIVE": "5"}


def hold(seconds: float) -> None:
    """The length of an outage is part of the scenario, not a wait for a condition."""
    time.sleep(seconds)


def newest_seq(agent: Agent) -> int:
    return int(http_json(f"http://127.0.0.1:{agent.api_port}/api/data")["seq"])


def history(discovery: Discovery, farm_id: str) -> dict[str, Any]:
    status, farm = discovery.get(f"/api/farms/{farm_id}")
    return farm["history"] if status == 200 else {}  # type: ignore[no-any-return]


def assert_every_reading_stored_once(discovery: Discovery, agent: Agent, timeout: float = 60) -> dict[str, Any]:
    """Every reading the agent numbered, from seq 1 to its newest, is in the history once, and confirmed."""

    def complete() -> dict[str, Any] | None:
        newest = newest_seq(agent)
        stored = history(discovery, agent.farm_id)
        if stored.get("first_seq") == 1 and stored.get("missing") == 0 and stored.get("last_seq", 0) >= newest \
                and agent.health()["committed_seq"] >= newest:
            return stored
        return None

    stored = wait_until(complete, timeout, interval=0.2, what=f"every reading of {agent.farm_id} in the history")
    assert stored["readings"] == stored["last_seq"]  # each seq once: none twice, none missing
    return stored


def prefill_backlog(data_dir: Path, farm_id: str, hours: float, step_s: float = 5.0) -> int:
    """An agent's queue as a long outage leaves it: a reading every ``step_s`` for ``hours``, none sent yet."""
    store = AgentStore(data_dir / f"agent-{farm_id}.db")
    ReadingQueue(store, 10**7, 8 * 86400)  # its tables
    now = utc_now()
    count = int(hours * 3600 / step_s)
    rows = []
    for seq in range(1, count + 1):
        ts = now - timedelta(seconds=(count - seq + 1) * step_s)
        payload = encode(Reading(ts=ts, seq=seq, values={"temp_inside": 20 + seq % 50 / 10, "humidity": 60.0}))
        rows.append((seq, ts.timestamp(), payload))
    with store.transaction() as db:
        db.executemany("INSERT INTO queue (seq, ts, payload) VALUES (?, ?, ?)", rows)
        store.set(SEQ, count)
    assert len(ReadingQueue(store, 10**7, 8 * 86400)) == count
    store.close()
    return count


@dataclass
class Farms:
    """The simulator and the agents of a test, stopped at its end."""

    tmp_path: Path
    simulator: Simulator
    agents: list[Agent] = field(default_factory=list)

    def agent(self, farm_id: str, url: str, poll: float = 0.3, env: dict[str, str] | None = None,
              start: bool = True) -> Agent:
        agent = Agent(self.tmp_path, self.tmp_path / f"agent-{farm_id}", farm_id, url, self.simulator.modbus_url,
                      poll_interval=poll, extra_env={**FAST, **(env or {})})
        self.agents.append(agent)
        return agent.start() if start else agent


@pytest.fixture
def farms(tmp_path: Path) -> Iterator[Farms]:
    made = Farms(tmp_path, Simulator(tmp_path).start())
    yield made
    for agent in made.agents:
        agent.stop()
    made.simulator.stop()


@dataclass
class Nodes:
    """Discovery nodes of a test, stopped at its end (a test may have replaced one)."""

    running: list[Discovery] = field(default_factory=list)

    def start(self, tmp_path: Path, data_dir: Path, env: dict[str, str], mqtt_port: int | None = None) -> Discovery:
        node = start_discovery(tmp_path, data_dir, env={**DISCOVERY_ENV, **env}, mqtt_port=mqtt_port)
        self.running.append(node)
        wait_until(lambda: node.get("/health")[1]["broker"] == "connected", 20, what="discovery connected")
        return node

    def on_embedded(self, broker: RunningBroker, tmp_path: Path) -> Discovery:
        """A node of its own identity on the test's embedded broker."""
        service = broker.add("discovery", Role.DISCOVERY)
        return self.start(tmp_path, tmp_path / "discovery", {"MQTT_URL": broker.url(service)}, broker.port)


@pytest.fixture
def nodes() -> Iterator[Nodes]:
    made = Nodes()
    yield made
    for node in made.running:
        node.process.stop()


@dataclass
class ExternalMosquitto:
    mosquitto: ExportedMosquitto
    discovery: Credentials
    farms: dict[str, Credentials]

    def url(self, credentials: Credentials, port: int | None = None) -> str:
        return f"mqtt://{credentials.username}:{credentials.password}@127.0.0.1:{port or self.mosquitto.port}"

    def restart_empty(self) -> None:
        """Killed and started again: persistence off, so no session, no queued and no retained message survives."""
        assert self.mosquitto.process is not None
        self.mosquitto.process.kill()
        self.mosquitto.process.wait(5)
        self.mosquitto.start()


@pytest.fixture
def external(data_dir: Path, tmp_path: Path) -> Iterator[ExternalMosquitto]:
    # a small queue for a client away: the short form of an outage longer than a real broker's queue
    bus, mosquitto = mosquitto_bus(data_dir, tmp_path, [f"max_queued_messages {QUEUED_FOR_OFFLINE}"])
    try:
        discovery = bus.add("discovery", Role.DISCOVERY)
        farm_credentials = {farm_id: bus.add(farm_id, Role.FARM, owner="owner-a") for farm_id in FARMS}
        yield ExternalMosquitto(mosquitto, discovery, farm_credentials)
    finally:
        mosquitto.stop()


# ---- the external broker ----------------------------------------------------------------------------------


def test_external_mosquitto_restarted_without_persistence_loses_no_reading(
    external: ExternalMosquitto, farms: Farms, nodes: Nodes, tmp_path: Path
) -> None:
    # discovery reaches the broker through a proxy, so that it can come back after the farm does
    proxy = TcpProxy(external.mosquitto.port).start()
    try:
        discovery = nodes.start(tmp_path, tmp_path / "discovery",
                                {"MQTT_URL": external.url(external.discovery, proxy.port)}, mqtt_port=proxy.port)
        agent = farms.agent(FARMS[0], external.url(external.farms[FARMS[0]]), poll=0.3)
        wait_until(lambda: history(discovery, FARMS[0]).get("readings", 0) >= 3, 20, what="the first readings")
        proxy.cut()
        external.restart_empty()
        wait_until(lambda: agent.health()["broker"] == "disconnected", 10, what="the agent noticing")
        hold(3)  # readings queue on the farm's disk
        wait_until(lambda: agent.health()["broker"] == "connected", 20, what="the agent back on the new broker")
        hold(2)  # the farm is back first: the new broker has no session and no subscriber for discovery
        proxy.restore()
        assert_every_reading_stored_once(discovery, agent)
        # the registry has the farm again although the new broker kept nothing retained: the agent re-announced it
        wait_until(lambda: discovery.get(f"/api/farms/{FARMS[0]}")[1]["online"], 10, what="the farm online")
    finally:
        proxy.close()


@pytest.mark.parametrize("outage_s", [5])
def test_discovery_killed_while_mosquitto_stays_up_loses_no_reading(
    external: ExternalMosquitto, farms: Farms, nodes: Nodes, tmp_path: Path, outage_s: float
) -> None:
    env = {"MQTT_URL": external.url(external.discovery)}
    discovery = nodes.start(tmp_path, tmp_path / "discovery", env, mqtt_port=external.mosquitto.port)
    agent = farms.agent(FARMS[0], external.url(external.farms[FARMS[0]]), poll=0.2)
    wait_until(lambda: history(discovery, FARMS[0]).get("readings", 0) >= 3, 20, what="the first readings")
    discovery.process.kill()
    wait_until(lambda: agent.health()["discovery"] == "offline", 10, what="the agent told by discovery's will")
    hold(outage_s)  # more readings than Mosquitto queues for a client away
    assert agent.health()["backlog"] >= outage_s  # the agent keeps what the history has not confirmed
    discovery = nodes.start(tmp_path, tmp_path / "discovery", env, mqtt_port=external.mosquitto.port)
    assert_every_reading_stored_once(discovery, agent)


# ---- the embedded broker ------------------------------------------------------------------------------------


def test_embedded_broker_killed_with_discovery_in_a_replay_and_restarted_loses_no_reading(
    farms: Farms, nodes: Nodes, tmp_path: Path
) -> None:
    data = tmp_path / "discovery"
    discovery = nodes.start(tmp_path, data, {})
    credentials = discovery.store.add(FARMS[0], Role.FARM, owner="owner-a")
    url = f"mqtt://{credentials.username}:{credentials.password}@127.0.0.1:{discovery.mqtt_port}"
    backlog = prefill_backlog(tmp_path / f"agent-{FARMS[0]}", FARMS[0], hours=1)
    agent = farms.agent(FARMS[0], url, poll=0.3, env={"REPLAY_RATE": "100"})
    wait_until(lambda: 50 <= history(discovery, FARMS[0]).get("readings", 0) < backlog - 100, 30, interval=0.02,
               what="the replay under way")
    # the broker in it goes too, with what it had acknowledged to the farm and the history had not committed
    discovery.process.kill()
    wait_until(lambda: agent.health()["broker"] == "disconnected", 10, what="the agent noticing")
    hold(2)
    discovery = nodes.start(tmp_path, data, {}, mqtt_port=discovery.mqtt_port)
    assert_every_reading_stored_once(discovery, agent)


# ---- partitions ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [5, pytest.param(60, marks=pytest.mark.slow)])
def test_partition_between_agent_and_broker_loses_no_reading(
    broker: RunningBroker, farms: Farms, nodes: Nodes, tmp_path: Path, seconds: float
) -> None:
    discovery = nodes.on_embedded(broker, tmp_path)
    proxy = TcpProxy(broker.port).start()
    try:
        credentials = broker.add(FARMS[0], Role.FARM, owner="owner-a")
        agent = farms.agent(FARMS[0], f"mqtt://{credentials.username}:{credentials.password}@127.0.0.1:{proxy.port}")
        wait_until(lambda: history(discovery, FARMS[0]).get("readings", 0) >= 3, 20, what="the first readings")
        proxy.stall()  # silent, half-open: only keepalive finds it
        hold(seconds)
        proxy.restore()
        assert_every_reading_stored_once(discovery, agent, timeout=60)
    finally:
        proxy.close()


@pytest.mark.parametrize("seconds", [5, pytest.param(60, marks=pytest.mark.slow)])
@pytest.mark.parametrize("bus", ["embedded", "mosquitto"])
def test_partition_between_discovery_and_broker_loses_no_reading(
    request: pytest.FixtureRequest, farms: Farms, nodes: Nodes, tmp_path: Path, seconds: float, bus: str
) -> None:
    # on Mosquitto, more readings than it queues for a client that stopped taking them
    if bus == "embedded":
        broker: RunningBroker = request.getfixturevalue("broker")
        port, service, farm = broker.port, broker.add("discovery", Role.DISCOVERY), broker.add(
            FARMS[0], Role.FARM, owner="owner-a")
    else:
        external: ExternalMosquitto = request.getfixturevalue("external")
        port, service, farm = external.mosquitto.port, external.discovery, external.farms[FARMS[0]]
    proxy = TcpProxy(port).start()
    try:
        url = f"mqtt://{service.username}:{service.password}@127.0.0.1:{proxy.port}"
        discovery = nodes.start(tmp_path, tmp_path / "discovery", {"MQTT_URL": url}, proxy.port)
        agent = farms.agent(FARMS[0], f"mqtt://{farm.username}:{farm.password}@127.0.0.1:{port}", poll=0.3)
        wait_until(lambda: history(discovery, FARMS[0]).get("readings", 0) >= 3, 20, what="the first readings")
        proxy.stall()
        wait_until(lambda: agent.health()["discovery"] == "offline", 20, what="discovery's will (keepalive)")
        hold(seconds)
        assert agent.health()["backlog"] >= seconds  # kept for the history, while live state went on
        proxy.restore()
        assert_every_reading_stored_once(discovery, agent, timeout=60)
    finally:
        proxy.close()


# ---- the agent killed, and long outages -----------------------------------------------------------------------


def test_agent_killed_in_the_middle_of_a_replay_loses_no_reading(
    broker: RunningBroker, farms: Farms, nodes: Nodes, tmp_path: Path
) -> None:
    discovery = nodes.on_embedded(broker, tmp_path)
    credentials = broker.add(FARMS[0], Role.FARM, owner="owner-a")
    backlog = prefill_backlog(tmp_path / f"agent-{FARMS[0]}", FARMS[0], hours=1)
    agent = farms.agent(FARMS[0], broker.url(credentials), env={"REPLAY_RATE": "100"})
    # killed once part of the backlog is stored and part is not
    wait_until(lambda: 50 <= history(discovery, FARMS[0]).get("readings", 0) < backlog - 100, 30, interval=0.02,
               what="the replay under way")
    assert agent.process is not None
    agent.process.kill()
    agent.start()
    stored = assert_every_reading_stored_once(discovery, agent)
    assert stored["readings"] > backlog


def replay_at_once(broker: RunningBroker, farms: Farms, nodes: Nodes, tmp_path: Path, hours: float,
                   env: dict[str, str]) -> tuple[int, float]:
    """Two agents back after an outage of ``hours``, each with a reading every 5 s queued, polling live
    meanwhile; returns the backlog of each and the seconds until both are stored."""
    discovery = nodes.on_embedded(broker, tmp_path)
    agents = []
    for farm_id in FARMS:
        credentials = broker.add(farm_id, Role.FARM, owner="owner-a")
        backlog = prefill_backlog(tmp_path / f"agent-{farm_id}", farm_id, hours)
        agents.append(farms.agent(farm_id, broker.url(credentials), poll=0.5, env=env, start=False))
    started = time.monotonic()
    for agent in agents:
        agent.start()
    for agent in agents:
        stored = assert_every_reading_stored_once(discovery, agent, timeout=max(60, hours * 3600 / 5 / 200))
        assert stored["last_seq"] > backlog  # live readings came meanwhile, after the backlog's numbers
    return backlog, time.monotonic() - started


def test_two_agents_replaying_an_hour_at_once_with_live_readings_lose_nothing(
    broker: RunningBroker, farms: Farms, nodes: Nodes, tmp_path: Path
) -> None:
    replay_at_once(broker, farms, nodes, tmp_path, hours=1, env={})


@pytest.mark.slow
@pytest.mark.timeout(1200)  # two queues of 120,960 readings written, then replayed
def test_two_agents_replaying_7_days_at_once_with_live_readings_lose_nothing(
    broker: RunningBroker, farms: Farms, nodes: Nodes, tmp_path: Path
) -> None:
    # at 500 readings/s each, five times the default REPLAY_RATE: two replays outrun the node's commits, so the
    # embedded broker holds what is beyond its 65,535 packet ids in the node's session meanwhile
    # 7 days queued fill the default bounds (120,960 readings, 7 days): the first live reading would push the
    # oldest out (dropped and reported, as it should be), so the bounds here hold 8 days
    replay_at_once(broker, farms, nodes, tmp_path, hours=7 * 24, env={
        "REPLAY_RATE": "500", "QUEUE_MAX_AGE": str(8 * 86400), "QUEUE_MAX_READINGS": str(8 * 86400 // 5)})


# ---- the confirmation ----------------------------------------------------------------------------------------


def test_a_farm_reads_only_its_own_confirmation_on_mosquitto(
    external: ExternalMosquitto, farms: Farms, nodes: Nodes, tmp_path: Path
) -> None:
    discovery = nodes.start(tmp_path, tmp_path / "discovery", {"MQTT_URL": external.url(external.discovery)},
                            mqtt_port=external.mosquitto.port)
    farms.agent(FARMS[0], external.url(external.farms[FARMS[0]]))
    wait_until(lambda: history(discovery, FARMS[0]).get("readings", 0) >= 3, 20, what="the first readings")
    other = external.farms[FARMS[1]]
    watcher = MqttWatcher(external.mosquitto.port, other.username, other.password,
                          ["kub/discovery/#", f"kub/discovery/committed/{FARMS[1]}"])
    try:
        wait_until(lambda: watcher.last("kub/discovery/status") == "online", 10, what="the discovery status")
        assert watcher.last(f"kub/discovery/committed/{FARMS[0]}") is None
    finally:
        watcher.close()


def test_readings_wait_for_the_history_not_for_the_broker(
    broker: RunningBroker, farms: Farms, tmp_path: Path
) -> None:
    """No discovery node: the broker acknowledges every reading, and the agent keeps them all."""
    credentials = broker.add(FARMS[0], Role.FARM, owner="owner-a")
    agent = farms.agent(FARMS[0], broker.url(credentials), poll=0.2)
    wait_until(lambda: agent.health()["broker"] == "connected" and newest_seq(agent) >= 10, 20, what="readings")
    health = agent.health()
    assert health["discovery"] == "offline" and health["backlog"] >= 10 and health["committed_seq"] == 0


def test_the_history_confirms_a_farm_with_one_mark_per_commit_not_one_per_reading(
    broker: RunningBroker, farms: Farms, nodes: Nodes, tmp_path: Path
) -> None:
    discovery = nodes.on_embedded(broker, tmp_path)
    credentials = broker.add(FARMS[0], Role.FARM, owner="owner-a")
    watcher = MqttWatcher(broker.port, broker.admin.username, broker.admin.password,
                          f"kub/discovery/committed/{FARMS[0]}")
    try:
        backlog = prefill_backlog(tmp_path / f"agent-{FARMS[0]}", FARMS[0], hours=1)
        agent = farms.agent(FARMS[0], broker.url(credentials), env={"REPLAY_RATE": "0"})
        assert_every_reading_stored_once(discovery, agent)
        marks = [mark["seq"] for mark in watcher.payloads(f"kub/discovery/committed/{FARMS[0]}")]
        assert marks and marks == sorted(marks) and marks[-1] >= backlog and len(marks) < backlog / 5
    finally:
        watcher.close()


def test_readings_lost_while_discovery_seemed_online_are_sent_again_after_the_timeout(
    broker: RunningBroker, farms: Farms, nodes: Nodes, tmp_path: Path
) -> None:
    """A discovery node's "online" with nothing behind it, as a client-id take-over or a restart quicker than
    its keepalive leaves one: the agent sends its readings to no history, and no reconnect or "offline" ever
    tells it. Only the confirmation's timeout sends them again."""
    stale = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="stale-discovery-status")
    stale.username_pw_set(broker.admin.username, broker.admin.password)
    stale.connect("127.0.0.1", broker.port)
    stale.loop_start()
    try:
        stale.publish(Topics().discovery_status(), b"online", qos=1, retain=True).wait_for_publish(5)
    finally:
        stale.disconnect()
        stale.loop_stop()
    credentials = broker.add(FARMS[0], Role.FARM, owner="owner-a")
    agent = farms.agent(FARMS[0], broker.url(credentials), poll=0.2, env={"CONFIRM_TIMEOUT": "3"})
    wait_until(lambda: agent.health()["discovery"] == "online" and newest_seq(agent) >= 10, 20,
               what="readings sent to a discovery node that is not there")
    discovery = nodes.on_embedded(broker, tmp_path)
    assert_every_reading_stored_once(discovery, agent, timeout=30)
