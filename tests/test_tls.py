"""MQTT over TLS with a throwaway CA made at test time: the embedded broker's TLS listener and a real
Mosquitto reading the exported files; an agent and the discovery node connect with ``mqtts://…?ca_file=``."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.identities import IdentityStore, Role
from tests.brokers import Bus, ExportedMosquitto, connects
from tests.farm_system import Agent, Simulator
from tests.helpers import ServiceProcess, free_port, wait_until, web_get, web_login
from tests.tls import ThrowawayCA, make_ca

FARM = "farm-tls"


@pytest.fixture
def ca(tmp_path: Path) -> ThrowawayCA:
    return make_ca(tmp_path / "ca")


@pytest.fixture(params=["embedded", "mosquitto"])
def tls_bus(request: pytest.FixtureRequest, ca: ThrowawayCA, data_dir: Path, tmp_path: Path) -> Iterator[Bus]:
    store = IdentityStore(data_dir)
    admin = store.add("admin", Role.ADMIN)
    store.add(FARM, Role.FARM, owner="owner-a")
    if request.param == "embedded":
        port, tls_port = free_port(), free_port()
        process = ServiceProcess(
            ["broker", "--data-dir", str(data_dir), "--mqtt-host", "127.0.0.1", "--mqtt-port", str(port),
             "--mqtt-tls-port", str(tls_port), "--tls-certfile", str(ca.certfile), "--tls-keyfile", str(ca.keyfile)],
            tmp_path / "broker.log",
        ).wait_port(tls_port)
        yield Bus("embedded", port, store, admin, process.log_path, tls_port=tls_port)
        process.stop()
        return
    mosquitto = ExportedMosquitto(data_dir, tmp_path, ca)
    mosquitto.start()
    assert mosquitto.tls_port is not None
    yield Bus("mosquitto", mosquitto.port, store, admin, tmp_path / "mosquitto.log", tmp_path / "mosquitto-export",
              mosquitto.process, tls_port=mosquitto.tls_port)
    mosquitto.stop()


def api(port: int, path: str, token: str) -> Any:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def test_a_client_needs_the_ca_to_connect_over_tls(tls_bus: Bus, ca: ThrowawayCA) -> None:
    assert tls_bus.tls_port is not None
    assert connects(tls_bus.tls_port, tls_bus.admin, ca=ca)
    assert not connects(tls_bus.tls_port, tls_bus.admin, tls=True)  # the system's CAs do not know ours
    assert not connects(tls_bus.tls_port, tls_bus.admin)  # plain MQTT on the TLS port
    assert not connects(tls_bus.tls_port, None, ca=ca)  # TLS does not replace credentials


def test_agent_and_discovery_over_mqtts_with_a_ca_file(tls_bus: Bus, ca: ThrowawayCA, tmp_path: Path) -> None:
    assert tls_bus.tls_port is not None
    farm = tls_bus.rotate(FARM)
    discovery = tls_bus.add("discovery", Role.DISCOVERY)
    mqtts = f"127.0.0.1:{tls_bus.tls_port}?ca_file={ca.ca_file}"
    simulator = Simulator(tmp_path).start()
    api_port = free_port()
    node = ServiceProcess(
        ["discovery", "--data-dir", str(tmp_path / "discovery-data"), "--host", "127.0.0.1", "--port", str(api_port)],
        tmp_path / "discovery.log",
        env={"MQTT_URL": f"mqtts://discovery:{discovery.password}@{mqtts}", "API_TOKEN": "t"},
    ).wait_port(api_port)
    agent = Agent(tmp_path, tmp_path / "agent-data", FARM, f"mqtts://{FARM}:{farm.password}@{mqtts}",
                  simulator.modbus_url).start()
    web_service = tls_bus.add("mobile_web", Role.MOBILE_WEB)
    tls_bus.store.add("vera", Role.VIEWER, password="viewer-pass")
    web_port = free_port()
    web = ServiceProcess(
        ["mobile-web", "--data-dir", str(tls_bus.store.path.parent), "--host", "127.0.0.1", "--port", str(web_port)],
        tmp_path / "web.log", env={"MQTT_URL": f"mqtts://mobile_web:{web_service.password}@{mqtts}"},
    ).wait_port(web_port)
    untrusting = Agent(tmp_path, tmp_path / "agent-data-2", FARM, f"mqtts://{FARM}:{farm.password}@127.0.0.1:"
                       f"{tls_bus.tls_port}", simulator.modbus_url).start()
    try:
        wait_until(lambda: agent.health()["broker"] == "connected", 15, what="agent over TLS")
        state = wait_until(lambda: api(api_port, f"/api/farms/{FARM}", "t").get("state"), 15,
                           what="discovery over TLS sees the farm's state")
        assert "temp_inside" in state["values"]
        assert api(api_port, "/health", "t")["broker"] == "connected"
        cookie = web_login(web_port, "vera", "viewer-pass")
        assert cookie
        wait_until(lambda: 'data-presence>online' in web_get(web_port, f"/farms/{FARM}", cookie)[1], 10,
                   what="the mobile web over TLS showing the farm online")
        wait_until(lambda: "certificate verify failed" in untrusting.process.output(), 10,  # type: ignore[union-attr]
                   what="an agent without the CA refusing the broker's certificate")
        assert untrusting.health()["broker"] == "disconnected"
    finally:
        untrusting.stop()
        web.stop()
        agent.stop()
        node.stop()
        simulator.stop()
