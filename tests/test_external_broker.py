"""Every service unchanged on an external broker: a real Mosquitto, with MQTT_URL pointing each one at it.

agent → Mosquitto → discovery (REST shows the farm), mobile web (SSE delivers the reading), Home Assistant
(device config, again on its birth message); ``kubmesh doctor`` checks the farm node against it.
"""

from __future__ import annotations

import http.client
import http.cookiejar
import json
import os
import subprocess
import sys
from pathlib import Path

import paho.mqtt.client as paho

from common.identities import IdentityStore, Role
from farm_agent.homeassistant import config_topic
from tests.conftest import RunningMosquitto
from tests.farm_system import Agent, Simulator
from tests.ha_schema import check_device_config
from tests.helpers import REPO, MqttWatcher, ServiceProcess, free_port, wait_until, web_login
from tests.test_discovery import TOKEN, Discovery

FARM = "farm-001"
PASSWORDS = {FARM: "farm-secret", "discovery": "discovery-secret", "mobile_web": "web-secret",
             "homeassistant": "ha-secret"}


def web_stream(port: int, username: str, password: str) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    cookie = web_login(port, username, password)
    assert cookie is not None, "the web login refused"
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", f"/events?farm={FARM}", headers={"Cookie": cookie})
    stream = connection.getresponse()
    assert stream.status == 200, stream.status
    return connection, stream


def test_the_whole_chain_runs_through_mosquitto(
    mosquitto: RunningMosquitto, simulator: Simulator, tmp_path: Path, data_dir: Path
) -> None:
    for username, password in PASSWORDS.items():
        mosquitto.add_user(username, password)
    IdentityStore(data_dir).add("vera", Role.VIEWER, password="viewer-pass")
    api_port, web_port = free_port(), free_port()
    url = lambda user: mosquitto.url(user, PASSWORDS[user])  # noqa: E731
    discovery = Discovery(ServiceProcess(
        ["discovery", "--data-dir", str(data_dir), "--host", "127.0.0.1", "--port", str(api_port)],
        tmp_path / "discovery.log", env={"API_TOKEN": TOKEN, "MQTT_URL": url("discovery")},
    ).wait_port(api_port), api_port, mosquitto.port, IdentityStore(data_dir))
    web = ServiceProcess(["mobile-web", "--data-dir", str(data_dir), "--host", "127.0.0.1", "--port", str(web_port)],
                         tmp_path / "web.log", env={"MQTT_URL": url("mobile_web")}).wait_port(web_port)
    home_assistant = MqttWatcher(mosquitto.port, "homeassistant", PASSWORDS["homeassistant"], "homeassistant/#")
    agent = Agent(tmp_path, tmp_path / "farm", FARM, url(FARM), simulator.modbus_url,
                  extra_env={"MAX_INTERVAL": "1"}).start()
    try:
        health = wait_until(lambda: (h := discovery.get("/health")[1])["broker"] == "connected" and h, 10,
                            what="discovery on Mosquitto")
        assert health["embedded_broker"] is False
        farm = wait_until(lambda: (f := discovery.get(f"/api/farms/{FARM}")[1]).get("online") and f.get("state")
                          and f, 15, what="the farm in the REST API")
        assert "temp_inside" in farm["state"]["values"] and farm["meta"]["device"]["model"] == "KUB-1063"

        connection, stream = web_stream(web_port, "vera", "viewer-pass")
        lines: list[bytes] = []
        wait_until(lambda: lines.append(stream.readline()) or b"event: state\n" in lines, 10, what="SSE reading")
        data = json.loads(stream.readline().removeprefix(b"data: "))
        assert data["farm"] == FARM and "temp_inside" in data["values"]
        connection.close()

        topic = config_topic("homeassistant", FARM)
        document = wait_until(lambda: home_assistant.last(topic), 10, what="the HA device config")
        check_device_config(document)
        seen = len(home_assistant.payloads(topic))
        birth = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
        birth.username_pw_set("homeassistant", PASSWORDS["homeassistant"])
        birth.connect("127.0.0.1", mosquitto.port)
        birth.loop_start()
        birth.publish("homeassistant/status", b"online", qos=1).wait_for_publish(5)
        birth.disconnect()
        birth.loop_stop()
        wait_until(lambda: len(home_assistant.payloads(topic)) > seen, 10, what="the config again after HA's birth")

        doctor = subprocess.run(
            [sys.executable, "-m", "kubmesh", "doctor", "--farm-id", FARM, "--mqtt-url", url(FARM), "--modbus-url",
             simulator.modbus_url, "--data-dir", str(tmp_path / "farm"), "--discovery-url",
             f"http://127.0.0.1:{api_port}"], capture_output=True, text=True, timeout=60, cwd=REPO,
            env={**os.environ, "TAILSCALE_CLI": str(tmp_path / "no-tailscale")})
        assert doctor.returncode == 0, doctor.stdout
        assert "ok    broker credentials" in doctor.stdout and "skip  tailscale" in doctor.stdout
    finally:
        home_assistant.close()
        agent.stop()
        web.stop()
        discovery.process.stop()
