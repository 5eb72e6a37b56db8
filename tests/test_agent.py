"""The farm agent against a real simulator process and a real broker, watched by a real MQTT client."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.identities import Role
from tests.conftest import RunningBroker, RunningMosquitto
from tests.farm_system import Agent, Simulator
from tests.helpers import MqttWatcher, ServiceProcess, wait_until

FARM = "farm-007"


@pytest.fixture
def farm(broker: RunningBroker, simulator: Simulator, tmp_path: Path) -> Iterator[tuple[Agent, MqttWatcher]]:
    credentials = broker.add(FARM, Role.FARM, owner="owner-a")
    # by exception as deployed: nothing is published for moves within the deadbands
    agent = Agent(tmp_path, broker.data_dir, FARM, broker.url(credentials), simulator.modbus_url,
                  extra_env={"MAX_INTERVAL": "600"}).start()
    watcher = MqttWatcher(broker.port, broker.admin.username, broker.admin.password, "#")
    yield agent, watcher
    watcher.close()
    agent.stop()


def _topic(kind: str) -> str:
    return f"kub/farms/{FARM}/{kind}"


def test_agent_publishes_presence_meta_state_and_heartbeat(farm: tuple[Agent, MqttWatcher]) -> None:
    agent, watcher = farm
    status = wait_until(lambda: watcher.last(_topic("status")), 10, what="status")
    assert status["state"] == "online"
    meta = wait_until(lambda: watcher.last(_topic("meta")), 10, what="meta")
    assert meta["device"]["model"] == "KUB-1063"
    wait_until(lambda: watcher.last(_topic("meta"))["device"].get("firmware") == "4.01", 10, what="firmware")
    state = wait_until(lambda: watcher.last(_topic("state")), 10, what="state")
    assert {"temp_inside", "humidity", "co2"} <= set(state["values"])
    assert all(status == "ok" for status in state["status"].values())
    heartbeat = wait_until(lambda: watcher.last(_topic("heartbeat")), 10, what="heartbeat")
    assert heartbeat["modbus"] == "ok"
    health = agent.health()
    assert health["status"] == "ok" and health["broker"] == "connected"


def test_agent_killed_with_sigkill_shows_offline_by_its_last_will(farm: tuple[Agent, MqttWatcher]) -> None:
    agent, watcher = farm
    wait_until(lambda: (watcher.last(_topic("status")) or {}).get("state") == "online", 10, what="online")
    assert agent.process is not None
    agent.process.kill()
    # keepalive is 5 s here: the broker must say offline within 1.5 x keepalive
    offline = wait_until(lambda: (watcher.last(_topic("status")) or {}).get("state") == "offline", 7.5,
                         what="offline by last will")
    assert offline
    assert watcher.last(_topic("status"))["reason"] == "connection lost"


def test_agent_stopping_cleanly_leaves_offline_retained(farm: tuple[Agent, MqttWatcher]) -> None:
    agent, watcher = farm
    wait_until(lambda: (watcher.last(_topic("status")) or {}).get("state") == "online", 10, what="online")
    assert agent.stop() == 0
    assert watcher.last(_topic("status"))["reason"] == "agent stopped"
    kinds = [event["kind"] for event in watcher.payloads(_topic("events"))]
    assert "agent_stopping" in kinds


def test_negative_temperature_and_sensor_break_arrive_decoded(
    farm: tuple[Agent, MqttWatcher], simulator: Simulator
) -> None:
    _, watcher = farm
    wait_until(lambda: watcher.last(_topic("state")), 10, what="first state")
    simulator.control("/raw", {"address": 0x00D5, "value": (-200) & 0xFFFF, "function": "input"})
    simulator.control("/sentinel", {"name": "humidity", "status": "break"})
    state = wait_until(
        lambda: (s := watcher.last(_topic("state"))) and s["status"].get("humidity") == "break" and s, 10,
        what="humidity break",
    )
    assert state["values"]["humidity"] is None
    wait_until(lambda: watcher.last(_topic("state"))["values"]["temp_inside"] == -20.0, 5, what="-20.0 °C")
    events = watcher.payloads(_topic("events"))
    assert any(e["kind"] == "sensor_status" and e["detail"]["name"] == "humidity" and e["detail"]["to"] == "break"
               for e in events)


def test_alarm_bits_arrive_decoded_with_events(farm: tuple[Agent, MqttWatcher], simulator: Simulator) -> None:
    _, watcher = farm
    wait_until(lambda: watcher.last(_topic("alarms")), 10, what="alarms")
    simulator.control("/alarm", {"group": "active_alarms", "bit": 17, "on": True})
    alarms = wait_until(lambda: (a := watcher.last(_topic("alarms"))) and a["active"] and a, 10, what="alarm")
    assert {"bit": 17, "label": "alarm bit 17"} in alarms["active"]
    assert {"bit": 17, "label": "alarm bit 17"} in alarms["latched"]
    simulator.control("/alarm", {"group": "active_alarms", "bit": 17, "on": False})
    wait_until(lambda: not watcher.last(_topic("alarms"))["active"], 10, what="alarm cleared")
    # the events follow the alarms message on the bus
    wait_until(lambda: {"alarm_raised", "alarm_cleared"} <= {e["kind"] for e in watcher.payloads(_topic("events"))},
               5, what="alarm_raised and alarm_cleared events")


def _transactions_per_poll(simulator: Simulator, watcher: MqttWatcher, polls: int) -> float:
    """Server-side request count over ``polls`` polls, counted between two heartbeats' polls_ok."""
    def polls_ok() -> int:
        return int(watcher.last(_topic("heartbeat"))["polls_ok"])

    start_requests = simulator.stats()["requests"]
    start_polls = polls_ok()
    wait_until(lambda: polls_ok() >= start_polls + polls, 20, what=f"{polls} polls")
    return (simulator.stats()["requests"] - start_requests) / (polls_ok() - start_polls)


@pytest.mark.parametrize(("strict", "limit"), [(True, 3), (False, 2)])
def test_settled_plan_needs_few_modbus_transactions_per_poll(
    broker: RunningBroker, tmp_path: Path, strict: bool, limit: int
) -> None:
    simulator = Simulator(tmp_path, ["--strict"] if strict else []).start()
    credentials = broker.add(FARM, Role.FARM)
    # heartbeats every second expose polls_ok, so requests can be counted per poll
    agent = Agent(tmp_path, broker.data_dir, FARM, broker.url(credentials), simulator.modbus_url,
                  poll_interval=0.2, extra_env={"HEARTBEAT_INTERVAL": "1"}).start()
    watcher = MqttWatcher(broker.port, broker.admin.username, broker.admin.password, _topic("#"))
    try:
        wait_until(lambda: (watcher.last(_topic("heartbeat")) or {}).get("polls_ok", 0) >= 3, 15, what="settling")
        per_poll = _transactions_per_poll(simulator, watcher, polls=10)
        # heartbeats are sampled, so allow a tenth for polls counted on one side of the window only
        assert per_poll <= limit + 0.1, per_poll
        state = watcher.last(_topic("state"))
        assert all(value is not None for value in state["values"].values())
    finally:
        watcher.close()
        agent.stop()
        simulator.stop()


@pytest.mark.parametrize(
    "outage_s", [pytest.param(0.0, id="brief"), pytest.param(20.0, id="20s", marks=pytest.mark.slow)]
)
def test_agent_survives_controller_outage_and_resumes(
    farm: tuple[Agent, MqttWatcher], simulator: Simulator, tmp_path: Path, outage_s: float
) -> None:
    agent, watcher = farm
    wait_until(lambda: watcher.last(_topic("state")), 10, what="first state")
    simulator.kill()
    time.sleep(outage_s)  # the controller stays away this long; the agent must neither exit nor stall
    wait_until(lambda: watcher.last(_topic("heartbeat"))["modbus"] == "error", 10, what="modbus error reported")
    assert any(e["kind"] == "modbus_error" for e in watcher.payloads(_topic("events")))
    assert agent.health()["modbus"] == "error"
    last_seq = watcher.last(_topic("state"))["seq"]

    restarted = Simulator(tmp_path, port=simulator.port, control_port=simulator.control_port).start()
    try:
        # resumes within two poll intervals of the device's return (plus reconnect and the first read)
        wait_until(lambda: watcher.last(_topic("state"))["seq"] > last_seq, 2 * 0.5 + 2, what="readings resume")
        wait_until(lambda: watcher.last(_topic("heartbeat"))["modbus"] == "ok", 5, what="modbus ok again")
        assert any(e["kind"] == "modbus_restored" for e in watcher.payloads(_topic("events")))
        assert agent.process is not None and agent.process.proc.poll() is None
    finally:
        restarted.stop()


def test_agent_works_the_same_with_mosquitto(
    mosquitto: RunningMosquitto, simulator: Simulator, tmp_path: Path, data_dir: Path
) -> None:
    mosquitto.add_user(FARM, "farm-secret")
    mosquitto.add_user("watcher", "watch-secret")
    watcher = MqttWatcher(mosquitto.port, "watcher", "watch-secret", "kub/#")
    agent = Agent(tmp_path, data_dir, FARM, mosquitto.url(FARM, "farm-secret"), simulator.modbus_url).start()
    try:
        wait_until(lambda: (watcher.last(_topic("status")) or {}).get("state") == "online", 10, what="online")
        state = wait_until(lambda: watcher.last(_topic("state")), 10, what="state")
        assert "temp_inside" in state["values"]
        assert agent.process is not None
        agent.process.kill()
        wait_until(lambda: watcher.last(_topic("status"))["state"] == "offline", 7.5, what="last will")
    finally:
        watcher.close()
        agent.stop()


def test_agent_reconnects_after_broker_restart_with_one_heartbeat_loop(
    broker: RunningBroker, simulator: Simulator, tmp_path: Path
) -> None:
    credentials = broker.add(FARM, Role.FARM)
    agent = Agent(tmp_path, broker.data_dir, FARM, broker.url(credentials), simulator.modbus_url,
                  extra_env={"HEARTBEAT_INTERVAL": "1"}).start()
    try:
        wait_until(lambda: agent.health()["broker"] == "connected", 10, what="connected")
        broker.process.kill()
        wait_until(lambda: agent.health()["broker"] == "disconnected", 20, what="the agent noticing")
        broker.process = ServiceProcess(
            ["broker", "--data-dir", str(broker.data_dir), "--mqtt-host", "127.0.0.1", "--mqtt-port", str(broker.port)],
            tmp_path / "broker-again.log",
        ).wait_port(broker.port)
        watcher = MqttWatcher(broker.port, broker.admin.username, broker.admin.password, _topic("#"))
        try:
            # a fresh broker has no retained messages: the agent publishes them again on reconnect
            wait_until(lambda: (watcher.last(_topic("status")) or {}).get("state") == "online", 40, what="online")
            wait_until(lambda: watcher.last(_topic("meta")), 5, what="meta again")
            first = len(watcher.payloads(_topic("heartbeat")))
            time.sleep(4.5)
            beats = len(watcher.payloads(_topic("heartbeat"))) - first
            assert 3 <= beats <= 6, f"{beats} heartbeats in 4.5 s at one a second"  # two loops would give ~9
        finally:
            watcher.close()
    finally:
        agent.stop()


def test_the_first_reading_after_a_controller_fault_is_published_though_nothing_moved(
    farm: tuple[Agent, MqttWatcher], simulator: Simulator
) -> None:
    _, watcher = farm
    for address in range(0x0081, 0x00D7):  # every value still: by exception, nothing is worth publishing
        simulator.control("/raw", {"address": address, "value": 0 if 0x00C0 <= address <= 0x00CF else 100})
    wait_until(lambda: (s := watcher.last(_topic("state"))) and s["values"]["temp_inside"] == 10.0, 10,
               what="the pinned values published")
    simulator.control("/fail", {"mode": "timeout", "function": 4})
    wait_until(lambda: watcher.last(_topic("heartbeat"))["modbus"] == "error", 10, what="modbus error reported")
    seq = watcher.last(_topic("state"))["seq"]
    simulator.control("/fail", {"mode": None})
    wait_until(lambda: watcher.last(_topic("state"))["seq"] > seq, 5, what="a reading as soon as it answers again")
