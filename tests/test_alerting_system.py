"""Alerting end to end, against real processes: a simulated KUB-1063, its farm agent, the discovery node
with its embedded broker, and local receivers for the channels. Short ALERT_* settings keep it quick."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from common.identities import IdentityStore, Role
from tests.alert_receivers import HttpReceiver
from tests.farm_system import Agent, Simulator
from tests.helpers import (
    REPO,
    ServiceProcess,
    free_consecutive_ports,
    free_port,
    port_open,
    wait_until,
    web_get,
    web_login,
)

FARM = "farm-001"
TOKEN = "alerting-system-token"
POLL_S = 0.5
SHORT = {"ALERT_DELAY": "1", "ALERT_REMIND_INTERVAL": "4", "ALERT_ESCALATE_AFTER": "9", "ALERT_SILENT_AFTER": "3",
         "ALERT_RETRIES": "1", "ALERT_RETRY_BACKOFF": "0.2"}


@dataclass
class Node:
    tmp_path: Path
    data_dir: Path
    env: dict[str, str]
    mqtt_port: int
    api_port: int
    process: ServiceProcess | None = None

    def start(self) -> Node:
        self.process = ServiceProcess(
            ["discovery", "--data-dir", str(self.data_dir), "--mqtt-host", "127.0.0.1",
             "--mqtt-port", str(self.mqtt_port), "--host", "127.0.0.1", "--port", str(self.api_port)],
            self.tmp_path / f"discovery-{time.monotonic_ns()}.log", env={"API_TOKEN": TOKEN, **self.env},
        ).wait_port(self.api_port)
        wait_until(lambda: self.request("GET", "/health")[1].get("broker") == "connected", 15, what="node connected")
        return self

    def restart(self) -> None:
        assert self.process is not None
        self.process.stop()
        wait_until(lambda: not port_open(self.mqtt_port), 10, what="old broker gone")
        self.start()

    def request(self, method: str, path: str, token: str = TOKEN) -> tuple[int, Any]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.api_port}{path}", method=method,
                                         headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)

    def alerts(self, state: str = "open") -> list[dict[str, Any]]:
        return self.request("GET", f"/api/alerts?farm={FARM}&state={state}")[1]["alerts"]  # type: ignore[no-any-return]


def notify(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kubmesh", "notify", *args, "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=60, cwd=REPO)


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    server = HttpReceiver().start()
    yield server
    server.stop()


@pytest.fixture
def farm_system(tmp_path: Path, data_dir: Path, receiver: HttpReceiver) -> Iterator[tuple[Node, Simulator, Agent]]:
    store = IdentityStore(data_dir)
    store.add("farmer", Role.OPERATOR, owner="owner-a", password="pw-farmer-1")
    store.add("boss", Role.ADMIN, password="pw-boss-1")
    farm = store.add(FARM, Role.FARM, owner="owner-a")
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules: []\n", encoding="utf-8")  # the simulated climate must not raise value alerts
    node = Node(tmp_path, data_dir, {**SHORT, "ALERT_RULES": str(rules)}, free_port(), free_port()).start()
    simulator = Simulator(tmp_path).start()
    agent_dir = tmp_path / "agent"
    agent = Agent(tmp_path, agent_dir, FARM, f"mqtt://{farm.username}:{farm.password}@127.0.0.1:{node.mqtt_port}",
                  simulator.modbus_url, poll_interval=POLL_S).start()
    try:
        yield node, simulator, agent
    finally:
        agent.stop()
        simulator.stop()
        if node.process is not None:
            node.process.stop()


def texts(receiver: HttpReceiver, path: str) -> list[str]:
    return [f"{r.json()['title']}\n{r.json()['message']}" for r in receiver.on(path)]


def test_an_alarm_bit_is_told_reminded_escalated_acknowledged_and_cleared_across_a_restart(
        farm_system: tuple[Node, Simulator, Agent], receiver: HttpReceiver, data_dir: Path) -> None:
    node, simulator, _ = farm_system
    assert notify(data_dir, "add", "farmer", receiver.url("json", "/farmer")).returncode == 0
    assert notify(data_dir, "add", "boss", receiver.url("json", "/boss"), "--tier", "2").returncode == 0
    wait_until(lambda: node.request("GET", f"/api/farms/{FARM}")[0] == 200, 15, what="farm known")

    raised = time.monotonic()
    simulator.control("/alarm", {"group": "active_alarms", "bit": 3, "on": True})
    first = wait_until(lambda: receiver.on("/farmer"), 15, what="the alarm told")[0]
    assert first.at - raised <= POLL_S + float(SHORT["ALERT_DELAY"]) + 2
    assert "авария, бит 3" in texts(receiver, "/farmer")[0]
    wait_until(lambda: len(receiver.on("/farmer")) >= 2, 10, what="a reminder")
    assert "ВСЁ ЕЩЁ НЕ ПОДТВЕРЖДЕНА" in texts(receiver, "/farmer")[1]

    node.restart()  # in the middle: neither repeated nor forgotten
    wait_until(lambda: receiver.on("/boss"), 15, what="escalated to tier 2")
    assert "НОВАЯ: Авария контроллера: авария, бит 3" in texts(receiver, "/boss")[0]
    assert sum("НОВАЯ" in text for text in texts(receiver, "/farmer")) == 1
    [alert] = node.alerts()
    assert (alert["kind"], alert["severity"], alert["state"]) == ("alarm", "critical", "open")

    token = IdentityStore(data_dir).add_api_token("farmer")
    status, body = node.request("POST", f"/api/alerts/{alert['id']}/ack", token=token)
    assert status == 200 and body["alert"]["acknowledged_by"] == "farmer"
    told = len(receiver.received)
    acknowledged = time.monotonic()
    node.restart()  # the acknowledgement survives it too
    wait_until(lambda: time.monotonic() - acknowledged > 2.5 * float(SHORT["ALERT_REMIND_INTERVAL"]), 30,
               what="two reminder intervals")
    assert len(receiver.received) == told  # no reminder, no escalation after the acknowledgement

    simulator.control("/alarm", {"group": "active_alarms", "bit": 3, "on": False})
    wait_until(lambda: any("ОТБОЙ" in t for t in texts(receiver, "/farmer")), 15, what="all clear to tier 1")
    wait_until(lambda: any("ОТБОЙ" in t for t in texts(receiver, "/boss")), 15, what="all clear to tier 2")
    assert node.alerts() == []
    assert node.alerts("all")[0]["cleared"]


def test_a_killed_agent_is_a_silent_farm_and_a_failing_channel_escalates_at_once(
        farm_system: tuple[Node, Simulator, Agent], receiver: HttpReceiver, data_dir: Path) -> None:
    node, _, agent = farm_system
    dead = f"json://127.0.0.1:{free_port()}/nobody-listens"
    assert notify(data_dir, "add", "farmer", dead).returncode == 0
    assert notify(data_dir, "add", "boss", receiver.url("json", "/boss"), "--tier", "2",
                  "--language", "en").returncode == 0
    wait_until(lambda: node.request("GET", f"/api/farms/{FARM}")[0] == 200, 15, what="farm known")

    assert agent.process is not None
    agent.process.kill()  # SIGKILL: no goodbye, the farm just goes quiet
    killed = time.monotonic()
    wait_until(lambda: receiver.on("/boss"), 20, what="the silent farm told to tier 2")
    # tier 1's only channel failed: tier 2 was told long before ALERT_ESCALATE_AFTER
    assert receiver.on("/boss")[0].at - killed < float(SHORT["ALERT_ESCALATE_AFTER"])
    assert "Farm silent" in texts(receiver, "/boss")[0]
    assert [a["kind"] for a in node.alerts()] == ["farm_silent"]
    listing = json.loads(notify(data_dir, "list", "farmer", "--json").stdout)
    assert listing[0]["state"] == "failing" and "connection" in listing[0]["last_error"].lower()
    [failing] = node.request("GET", "/health")[1]["alerting"]["channels_failing"]
    assert failing.startswith("farmer json://127.0.0.1")
    with urllib.request.urlopen(f"http://127.0.0.1:{node.api_port}/metrics", timeout=5) as response:
        metrics = response.read().decode()
    assert 'kubmesh_alert_channel_failing{channel="json://127.0.0.1' in metrics
    assert 'kubmesh_alerts{severity="critical",state="open"} 1.0' in metrics


@pytest.mark.slow
def test_demo_notify_tells_the_farmer_of_a_simulated_alarm(tmp_path: Path, receiver: HttpReceiver) -> None:
    ports = {name: free_port() for name in ("mqtt", "api", "web")}
    ports.update({name: free_consecutive_ports(2) for name in ("agent", "modbus", "control")})
    log = tmp_path / "demo.log"
    data_dir = tmp_path / "demo"
    with open(log, "wb") as out:
        demo = subprocess.Popen(
            [sys.executable, "-m", "kubmesh", "demo", "--data-dir", str(data_dir), "--poll-interval", "1",
             *(arg for name, port in ports.items() for arg in (f"--{name}-port", str(port))),
             "--notify", receiver.url("json", "/demo-farmer")],
            stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, "ALERT_DELAY": "1"})
    try:
        wait_until(lambda: (data_dir / "credentials.json").exists() or demo.poll() is not None, 60, what="demo")
        assert demo.poll() is None, log.read_text()
        wait_until(lambda: port_open(ports["control"]), 10, what="simulator control")
        raised = time.monotonic()
        Simulator(tmp_path, control_port=ports["control"]).control(
            "/alarm", {"group": "active_alarms", "bit": 9, "on": True})
        arrived = wait_until(lambda: [r for r in receiver.on("/demo-farmer") if "бит 9" in r.json()["message"]],
                             15, what="the demo's alarm told")[0]
        assert arrived.at - raised <= 1 + 1 + 2  # poll interval + delay + 2 s
        body = arrived.json()["message"]
        assert "Птичник №1" in body and f"http://127.0.0.1:{ports['web']}/farms/farm-001" in body
    finally:
        demo.terminate()
        demo.wait(20)


@pytest.mark.slow
def test_the_farm_page_shows_the_alert_and_one_tap_acknowledges_it(
        farm_system: tuple[Node, Simulator, Agent], receiver: HttpReceiver, data_dir: Path, tmp_path: Path) -> None:
    node, simulator, _ = farm_system
    assert notify(data_dir, "add", "farmer", receiver.url("json", "/farmer")).returncode == 0
    service = IdentityStore(data_dir).add("mobile_web", Role.MOBILE_WEB)
    port = free_port()
    web = ServiceProcess(["mobile-web", "--data-dir", str(data_dir), "--host", "127.0.0.1", "--port", str(port)],
                         tmp_path / "web.log", env={"MQTT_URL": f"mqtt://{service.username}:{service.password}"
                                                                 f"@127.0.0.1:{node.mqtt_port}"}).wait_port(port)
    try:
        cookie = web_login(port, "farmer", "pw-farmer-1")
        assert cookie
        wait_until(lambda: node.request("GET", f"/api/farms/{FARM}")[0] == 200, 15, what="farm known")
        simulator.control("/alarm", {"group": "active_alarms", "bit": 3, "on": True})
        def page_with_alert() -> str | None:
            page = web_get(port, f"/farms/{FARM}", cookie)[1]
            return page if "data-alert=" in page else None

        page = wait_until(page_with_alert, 15, what="the alert on the farm page")
        assert "Controller alarm: alarm bit 3" in page and "data-acknowledge" in page
        token = page.split('name="csrf_token" value="')[1].split('"')[0]
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("POST", f"/farms/{FARM}/alerts/ack", urllib.parse.urlencode({"csrf_token": token}),
                           {"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"})
        answer = connection.getresponse()
        answer.read()
        connection.close()
        assert answer.status == 302
        wait_until(lambda: node.alerts()[0].get("acknowledged_by") == "farmer", 10, what="acknowledged over MQTT")
        wait_until(lambda: "data-acknowledge" not in web_get(port, f"/farms/{FARM}", cookie)[1], 10,
                   what="the page without the button")
    finally:
        web.stop()
