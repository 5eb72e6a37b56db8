"""Commands on set/{name} from real MQTT clients, through a real agent, to a simulator that records writes."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.identities import Role
from tests.conftest import RunningBroker
from tests.farm_system import Agent, Simulator
from tests.helpers import MqttWatcher, wait_until

FARM = "farm-042"
RESET = 0x0020
TIMEZONE = 0x003F


class Farm:
    def __init__(self, broker: RunningBroker, simulator: Simulator, agent: Agent, watcher: MqttWatcher) -> None:
        self.broker, self.simulator, self.agent, self.watcher = broker, simulator, agent, watcher

    def publish(self, name: str, payload: str, retain: bool = False) -> None:
        """A command as a user sends it: mosquitto_pub with the admin login."""
        admin = self.broker.admin
        subprocess.run(
            ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.broker.port), "-u", admin.username,
             "-P", admin.password, "-q", "1", "-t", f"kub/farms/{FARM}/set/{name}", "-m", payload,
             *(["-r"] if retain else [])],
            check=True, timeout=10,
        )

    def acks(self) -> list[dict[str, Any]]:
        return self.watcher.payloads(f"kub/farms/{FARM}/ack")

    def ack_for(self, predicate: Any, what: str) -> dict[str, Any]:
        return wait_until(lambda: next((a for a in self.acks() if predicate(a)), None), 10, what=what)

    def writes(self, address: int | None = None) -> list[dict[str, Any]]:
        writes = self.simulator.stats()["writes"]
        return [w for w in writes if address is None or w["address"] == address]


@pytest.fixture
def farm(broker: RunningBroker, tmp_path: Path) -> Iterator[Farm]:
    simulator = Simulator(tmp_path, ["--alarm", "active_alarms:2"]).start()
    credentials = broker.add(FARM, Role.FARM)
    agent = Agent(tmp_path, broker.data_dir, FARM, broker.url(credentials), simulator.modbus_url).start()
    watcher = MqttWatcher(broker.port, broker.admin.username, broker.admin.password, f"kub/farms/{FARM}/#")
    wait_until(lambda: watcher.last(f"kub/farms/{FARM}/state"), 10, what="agent running")
    wait_until(lambda: watcher.subscribed.is_set(), 5)
    yield Farm(broker, simulator, agent, watcher)
    watcher.close()
    agent.stop()
    simulator.stop()


def test_reset_alarms_writes_once_and_acknowledges(farm: Farm) -> None:
    alarms = wait_until(lambda: (a := farm.watcher.last(f"kub/farms/{FARM}/alarms")) and a["latched"] and a, 10,
                        what="a latched alarm")
    assert alarms["latched"]
    farm.simulator.control("/alarm", {"group": "active_alarms", "bit": 2, "on": False})
    farm.publish("reset_alarms", json.dumps({"value": 1, "id": "x"}))
    ack = farm.ack_for(lambda a: a["id"] == "x", "ack x")
    assert ack["ok"] is True and ack["name"] == "reset_alarms" and "error" not in ack
    assert [w["value"] for w in farm.writes(RESET)] == [1]
    wait_until(lambda: farm.watcher.last(f"kub/farms/{FARM}/alarms")["latched"] == [], 10, what="latched cleared")
    applied = [e for e in farm.watcher.payloads(f"kub/farms/{FARM}/events") if e["kind"] == "command_applied"]
    assert applied and applied[-1]["detail"]["id"] == "x"

    farm.publish("reset_alarms", json.dumps({"value": 1, "id": "x"}))  # the same id again: no second write
    wait_until(lambda: len([a for a in farm.acks() if a["id"] == "x"]) == 2, 10, what="second ack")
    assert len(farm.writes(RESET)) == 1


@pytest.mark.parametrize(
    ("name", "payload", "reason"),
    [
        ("day_counter", "5", "read-only"),
        ("no_such_value", "1", "unknown name"),
        ("timezone_minutes", '{"value": 5000, "id": "far"}', "out of range"),
        ("timezone_minutes", '{"value": 7, "id": "odd"}', "steps of 15"),
        ("reset_alarms", '{"value": 2, "id": "two"}', "out of range"),
        ("reset_alarms", '{"value": [[[', "malformed payload"),
        ("reset_alarms", '"yes"', "malformed payload"),
        ("reset_alarms", '{"value": 1, "id": "old", "ts": "2020-01-01T00:00:00.000Z"}', "too old"),
    ],
)
def test_refused_commands_get_a_reason_and_write_nothing(farm: Farm, name: str, payload: str, reason: str) -> None:
    before = len(farm.acks())
    farm.publish(name, payload)
    ack = wait_until(lambda: len(farm.acks()) > before and farm.acks()[-1], 10, what="an ack")
    assert ack["ok"] is False
    assert reason in ack["error"]
    assert ack["id"], "every ack carries an id, generated when the payload had none"
    assert farm.writes() == []
    polls = farm.agent.health()["polls_ok"]
    wait_until(lambda: farm.agent.health()["polls_ok"] > polls + 2, 10, what="polling goes on")


def test_setting_is_written_and_read_back(farm: Farm) -> None:
    farm.publish("timezone_minutes", json.dumps({"value": 180, "id": "tz"}))
    ack = farm.ack_for(lambda a: a["id"] == "tz", "ack tz")
    assert ack["ok"] is True, ack
    assert [w["value"] for w in farm.writes(TIMEZONE)] == [180]


def test_negative_setting_is_written_as_twos_complement(farm: Farm) -> None:
    farm.publish("timezone_minutes", json.dumps({"value": -180, "id": "west"}))
    assert farm.ack_for(lambda a: a["id"] == "west", "ack west")["ok"] is True
    assert [w["value"] for w in farm.writes(TIMEZONE)] == [(-180) & 0xFFFF]


def test_read_back_mismatch_is_refused(farm: Farm) -> None:
    farm.simulator.control("/raw", {"address": TIMEZONE, "value": 60, "function": "holding"})
    farm.publish("timezone_minutes", json.dumps({"value": 120, "id": "pinned"}))
    ack = farm.ack_for(lambda a: a["id"] == "pinned", "ack pinned")
    assert ack["ok"] is False and "read-back mismatch" in ack["error"]


@pytest.mark.parametrize(("mode", "reason"), [("exception", "device error"), ("timeout", "timeout")])
def test_device_failure_during_write_is_reported(farm: Farm, mode: str, reason: str) -> None:
    farm.simulator.control("/fail", {"mode": mode, "function": 6})
    farm.publish("reset_alarms", json.dumps({"value": 1, "id": f"fail-{mode}"}))
    ack = farm.ack_for(lambda a: a["id"] == f"fail-{mode}", "ack of a failed write")
    assert ack["ok"] is False and reason in ack["error"]
    farm.simulator.control("/fail", {"mode": None})
    # polls, not states: by exception, a quiet house may publish nothing for up to MAX_INTERVAL
    polls = farm.agent.health()["polls_ok"]
    wait_until(lambda: farm.agent.health()["polls_ok"] > polls + 2, 10, what="polling goes on")


def test_retained_command_is_never_executed_on_reconnect(farm: Farm, broker: RunningBroker, tmp_path: Path) -> None:
    """The embedded broker keeps no retained ``set``: it is applied once, live, and never again."""
    farm.publish("reset_alarms", json.dumps({"value": 1, "id": "sticky"}), retain=True)
    farm.ack_for(lambda a: a["id"] == "sticky", "live ack")
    writes = len(farm.writes(RESET))
    assert farm.agent.stop() == 0
    fresh = MqttWatcher(broker.port, broker.admin.username, broker.admin.password, f"kub/farms/{FARM}/set/#")
    try:
        wait_until(lambda: fresh.subscribed.is_set(), 5, what="a new subscriber")
        credentials = broker.store.rotate(FARM)
        again = Agent(tmp_path, broker.data_dir, FARM, broker.url(credentials), farm.simulator.modbus_url).start()
        try:
            # a command after the agent's subscription: had the broker kept a copy, it would have come first
            wait_until(lambda: farm.watcher.payloads(f"kub/farms/{FARM}/status")[-1]["state"] == "online", 10,
                       what="the agent back online")
            farm.publish("reset_alarms", json.dumps({"value": 1, "id": "fresh"}))
            farm.ack_for(lambda a: a["id"] == "fresh", "ack of a command after the reconnect")
            assert [a["id"] for a in farm.acks()].count("sticky") == 1
            assert len(farm.writes(RESET)) == writes + 1
            assert fresh.payloads(f"kub/farms/{FARM}/set/reset_alarms") == [{"value": 1, "id": "fresh"}]
        finally:
            again.stop()
    finally:
        fresh.close()
