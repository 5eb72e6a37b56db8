"""The SMS fallback end to end: a real ``kubmesh farm-agent`` with a (simulated) GSM modem on a pty pair, a real
``kubmesh simulate`` whose control API raises alarms, the embedded ``kubmesh broker`` behind a TCP proxy that
cuts the farm's link, and a real discovery node whose last will says ``offline``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from common.identities import Role
from tests.conftest import RunningBroker
from tests.farm_system import Agent, Simulator
from tests.gsm_modem import SimulatedModem
from tests.helpers import MqttWatcher, wait_until
from tests.tcp_proxy import TcpProxy
from tests.test_discovery import start_discovery
from tests.test_doctor import doctor, lines

FARM = "farm-077"
FARMER, NEIGHBOUR = "+79001234567", "+79007654321"
AFTER = 2.0  # SMS_AFTER: seconds cut off before the farm texts


def hold(seconds: float) -> None:
    """How long a state lasts is part of the scenario (nothing more may be sent meanwhile), not a wait."""
    time.sleep(seconds)


@dataclass
class Farm:
    broker: RunningBroker
    simulator: Simulator
    proxy: TcpProxy
    modem: SimulatedModem
    agent: Agent
    bus: MqttWatcher

    def sms(self) -> dict[str, Any]:
        return self.agent.health()["sms"]  # type: ignore[no-any-return]

    def alarm(self, bit: int, on: bool = True) -> None:
        self.simulator.control("/alarm", {"group": "active_alarms", "bit": bit, "on": on})

    def alarm_seen(self, bit: int) -> bool:
        alarms = self.bus.last(f"kub/farms/{FARM}/alarms") or {}
        return any(item["bit"] == bit for item in alarms.get("active", []))

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [event for event in self.bus.payloads(f"kub/farms/{FARM}/events") if event.get("kind") == kind]

    def to(self, number: str) -> list[str]:
        return [sms.text for sms in self.modem.messages if sms.number == number]


@pytest.fixture
def farm_factory(broker: RunningBroker, simulator: Simulator, tmp_path: Path) -> Iterator[Any]:
    made: list[Farm] = []

    def make(**env: str) -> Farm:
        modem = SimulatedModem(tmp_path / "modem")
        modem.plug()
        proxy = TcpProxy(broker.port).start()
        credentials = broker.add(FARM, Role.FARM, owner="owner-a")
        bus = MqttWatcher(broker.port, broker.admin.username, broker.admin.password,
                          [f"kub/farms/{FARM}/#", "kub/discovery/status"])
        wait_until(bus.subscribed.is_set, 10, what="the bus watcher")
        agent = Agent(tmp_path, tmp_path / "agent-data", FARM,
                      f"mqtt://{credentials.username}:{credentials.password}@127.0.0.1:{proxy.port}",
                      simulator.modbus_url, poll_interval=0.3, extra_env={
                          "FARM_NAME": "Птичник 2", "SMS_DEVICE": str(modem.device),
                          "SMS_NUMBERS": f"{FARMER},{NEIGHBOUR}", "SMS_AFTER": str(AFTER),
                          "KUBMESH_SMS_GROUP_WINDOW": "0.5", "KUBMESH_SMS_CHECK_INTERVAL": "1",
                          "KUBMESH_RECONNECT_MAX": "1", "HEARTBEAT_INTERVAL": "1", **env}).start()
        made.append(Farm(broker, simulator, proxy, modem, agent, bus))
        wait_until(lambda: agent.health()["broker"] == "connected", 15, what="the agent connected")
        wait_until(lambda: made[-1].sms()["ok"], 20, what="the agent's modem ready")
        return made[-1]

    yield make
    for farm in made:
        farm.agent.stop()
        farm.bus.close()
        farm.proxy.close()
        farm.modem.unplug()


def test_broker_cut_with_an_alarm_active_texts_once_with_farm_and_label_then_reports_it_on_the_bus(
    farm_factory: Any,
) -> None:
    farm: Farm = farm_factory()
    farm.alarm(3)
    wait_until(lambda: farm.alarm_seen(3), 10, what="the alarm on the bus")
    farm.proxy.cut()
    wait_until(lambda: farm.agent.health()["broker"] == "disconnected", 10, what="the agent noticing the cut")
    wait_until(lambda: farm.to(NEIGHBOUR), AFTER + 15, what="the SMS to both numbers")
    [text] = farm.to(FARMER)
    assert text.startswith("Ферма «Птичник 2»: нет связи с сервером")
    assert "мониторинг отрезан от фермы" in text and "АВАРИЯ: авария (бит 3)." in text
    assert farm.to(NEIGHBOUR) == [text]
    hold(AFTER + 1)
    assert len(farm.modem.messages) == 2  # once to each number: nothing changed, nothing more is sent
    sms = farm.sms()
    assert sms["sent"] == 1 and sms["last_sms"] and sms["cut_off_since"]
    assert farm.events("sms_sent") == []

    farm.proxy.restore()
    [event] = wait_until(lambda: farm.events("sms_sent"), 15, what="the sms_sent event")
    assert event["message"] == text
    assert event["detail"]["reason"] == "cut_off" and event["detail"]["alarms"] == ["alarm bit 3"]
    assert event["detail"]["recipients"] == 2 and event["detail"]["failed"] == 0
    heartbeat = wait_until(lambda: (farm.bus.last(f"kub/farms/{FARM}/heartbeat") or {}).get("sms"), 10)
    assert heartbeat["ok"] is True and heartbeat["registered"] is True and heartbeat["sent"] == 1
    hold(1)
    assert len(farm.events("sms_sent")) == 1
    checked = doctor("--farm-id", FARM, "--data-dir", str(farm.agent.data_dir), "--mqtt-url", "mqtt://127.0.0.1:1",
                     env={"SMS_DEVICE": str(farm.modem.device), "SMS_NUMBERS": FARMER,
                          "KUBMESH_API_PORT": str(farm.agent.api_port)})
    assert lines(checked)["SMS modem"] == "ok", checked.stdout
    assert f"last SMS {sms['last_sms']} (the running agent says)" in checked.stdout


@pytest.mark.slow
def test_an_alarm_storm_while_cut_off_keeps_to_the_hourly_limit(farm_factory: Any) -> None:
    farm: Farm = farm_factory(SMS_MAX_PER_HOUR="3")
    farm.proxy.cut()
    wait_until(lambda: farm.to(FARMER), AFTER + 15, what="the cut-off SMS")
    for flip in range(16):  # an alarm that comes and goes, slower than the grouping window
        farm.alarm(5, on=flip % 2 == 0)
        hold(0.8)
    farm.alarm(6)  # news the farmer was never told
    wait_until(lambda: farm.sms()["held_back"], 10, what="a message held back by the limit")
    hold(2)
    texts = farm.to(FARMER)
    assert len(texts) == 3 and farm.sms()["sent"] == 3, texts
    assert not any("бит 6" in text for text in texts)
    assert farm.agent.health()["polls_ok"] > 0


def test_discoverys_last_will_while_the_link_works_texts_monitoring_down_once(
    farm_factory: Any, broker: RunningBroker, tmp_path: Path,
) -> None:
    service = broker.add("discovery", Role.DISCOVERY)
    discovery = start_discovery(tmp_path, tmp_path / "discovery-data", mqtt_port=broker.port,
                                env={"MQTT_URL": broker.url(service), "KUBMESH_KEEPALIVE": "2"})
    farm: Farm = farm_factory()
    try:
        wait_until(lambda: farm.bus.last("kub/discovery/status") == "online", 15, what="discovery online")
        discovery.process.kill()  # no goodbye: the broker sends its last will
        wait_until(lambda: farm.bus.last("kub/discovery/status") == "offline", 15, what="discovery's will")
        [text] = wait_until(lambda: farm.to(FARMER), AFTER + 15, what="the monitoring-down SMS")
        assert text == "Ферма «Птичник 2»: сервер мониторинга не работает 1 мин, ферма на связи и пишет сама. " \
                       "Аварий нет."
        assert farm.agent.health()["broker"] == "connected"
        hold(AFTER + 1)
        assert farm.to(FARMER) == [text]
        assert farm.events("sms_sent") == []  # nobody listens yet
        discovery = start_discovery(tmp_path, tmp_path / "discovery-data", mqtt_port=broker.port,
                                    env={"MQTT_URL": broker.url(service)})
        [event] = wait_until(lambda: farm.events("sms_sent"), 15, what="the sms_sent event once discovery is back")
        assert event["detail"]["reason"] == "monitoring_down"
    finally:
        discovery.process.stop()


def test_an_unplugged_modem_is_reported_and_the_agent_keeps_polling(farm_factory: Any) -> None:
    farm: Farm = farm_factory()
    assert "_gammu" in Path(f"/proc/{farm.agent.process.proc.pid}/maps").read_text()  # type: ignore[union-attr]
    farm.modem.unplug()
    sms = wait_until(lambda: (lambda s: s if not s["ok"] else None)(farm.sms()), 10, what="the modem reported lost")
    assert "ttyUSB2" in sms["error"]
    beat = wait_until(lambda: (lambda b: b if b and not b["ok"] else None)(
        (farm.bus.last(f"kub/farms/{FARM}/heartbeat") or {}).get("sms")), 10, what="the heartbeat saying so")
    assert beat["error"] == sms["error"]
    polls = farm.agent.health()["polls_ok"]
    wait_until(lambda: farm.agent.health()["polls_ok"] >= polls + 5, 10, what="polling going on")
    assert farm.agent.health()["broker"] == "connected" and farm.agent.process.proc.poll() is None  # type: ignore[union-attr]
    farm.modem.plug()
    wait_until(lambda: farm.sms()["ok"], 20, what="the modem found again")


def test_an_agent_without_sms_device_does_not_load_the_modem_library(
    broker: RunningBroker, simulator: Simulator, tmp_path: Path,
) -> None:
    credentials = broker.add(FARM, Role.FARM, owner="owner-a")
    agent = Agent(tmp_path, tmp_path / "agent-data", FARM, broker.url(credentials), simulator.modbus_url).start()
    try:
        wait_until(lambda: agent.health()["polls_ok"] > 0, 10, what="the first poll")
        assert "sms" not in agent.health()
        maps = Path(f"/proc/{agent.process.proc.pid}/maps").read_text()  # type: ignore[union-attr]
        assert "gammu" not in maps
    finally:
        agent.stop()


def test_an_agent_with_a_device_but_no_modem_reports_it_and_keeps_polling(
    broker: RunningBroker, simulator: Simulator, tmp_path: Path,
) -> None:
    credentials = broker.add(FARM, Role.FARM, owner="owner-a")
    agent = Agent(tmp_path, tmp_path / "agent-data", FARM, broker.url(credentials), simulator.modbus_url,
                  extra_env={"SMS_DEVICE": str(tmp_path / "ttyUSB9"), "SMS_NUMBERS": FARMER}).start()
    try:
        sms = wait_until(lambda: (lambda s: s if s and s["error"] else None)(agent.health().get("sms")), 10,
                         what="the missing modem reported")
        assert sms["ok"] is False and "doesn't exist" in sms["error"]
        polls = agent.health()["polls_ok"]
        wait_until(lambda: agent.health()["polls_ok"] > polls, 10, what="polling going on")
    finally:
        agent.stop()


