"""``/metrics`` of the discovery node and of an agent, read with prometheus_client's own text parser."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import paho.mqtt.client as paho
from prometheus_client.parser import text_string_to_metric_families

from common.identities import Role
from tests.farm_system import Agent, Simulator
from tests.helpers import wait_until
from tests.test_discovery import start_discovery

FARM = "farm-001"


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_metrics_of_discovery_and_agent_are_prometheus_text(
    simulator: Simulator, tmp_path: Path, data_dir: Path
) -> None:
    discovery = start_discovery(tmp_path, data_dir)
    credentials = discovery.store.add(FARM, Role.FARM, owner="ivan")
    viewer = discovery.store.add("viewer", Role.VIEWER)
    agent = Agent(tmp_path, data_dir, FARM, f"mqtt://{FARM}:{credentials.password}@127.0.0.1:{discovery.mqtt_port}",
                  simulator.modbus_url).start()
    try:
        def readings() -> float:
            return scrape(discovery.api_port).get(("kubmesh_readings_received_total", (("farm", FARM),)), 0)

        wait_until(lambda: readings() >= 2, 20, what="readings counted by discovery")
        found = wait_until(lambda: (m := scrape(discovery.api_port))[("kubmesh_farms", (("state", "online"),))] == 1
                           and m, 10, what="the farm online in the metrics")
        assert found[("kubmesh_broker_clients", ())] >= 2  # the discovery node's own session and the agent
        assert found[("kubmesh_broker_messages_received_total", ())] > 0
        refusals = found[("kubmesh_broker_acl_refusals_total", ())]

        intruder = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
        intruder.username_pw_set(viewer.username, viewer.password)
        intruder.connect("127.0.0.1", discovery.mqtt_port)
        intruder.loop_start()
        try:
            intruder.publish(f"kub/farms/{FARM}/set/reset_alarms", b"1", qos=1).wait_for_publish(5)
            wait_until(lambda: scrape(discovery.api_port)[("kubmesh_broker_acl_refusals_total", ())] > refusals, 10,
                       what="the refused publish counted")
        finally:
            intruder.disconnect()
            intruder.loop_stop()

        own = wait_until(lambda: (m := scrape(agent.api_port))[("kubmesh_modbus_poll_seconds_count", (("farm", FARM),))]
                         >= 2 and m, 10, what="polls timed")
        farm = (("farm", FARM),)
        assert own[("kubmesh_agent_polls_total", (("farm", FARM), ("result", "ok")))] >= 2
        assert own[("kubmesh_modbus_up", farm)] == 1 and own[("kubmesh_mqtt_connected", farm)] == 1
        assert own[("kubmesh_modbus_errors_total", farm)] == 0
        # a reading is in the queue from its poll until the broker's PUBACK: none is left waiting
        wait_until(lambda: scrape(agent.api_port)[("kubmesh_backlog_readings", farm)] == 0, 10,
                   what="no reading waiting to be sent")
        assert 0 < own[("kubmesh_modbus_poll_seconds_sum", farm)] < own[("kubmesh_modbus_poll_seconds_count", farm)]

        simulator.stop()
        wait_until(lambda: scrape(agent.api_port)[("kubmesh_modbus_errors_total", farm)] > 0, 10,
                   what="Modbus errors counted")
        assert scrape(agent.api_port)[("kubmesh_modbus_up", farm)] == 0
    finally:
        agent.stop()
        discovery.process.stop()


def test_metrics_need_no_token_while_the_api_does(tmp_path: Path, data_dir: Path) -> None:
    discovery = start_discovery(tmp_path, data_dir)
    try:
        assert ("kubmesh_farms", (("state", "online"),)) in scrape(discovery.api_port)
        assert discovery.get("/api/farms", token=None)[0] == 401
    finally:
        discovery.process.stop()
