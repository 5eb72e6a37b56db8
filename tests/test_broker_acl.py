"""Every client is authenticated and confined to its topics: each case against the embedded broker and
against a real Mosquitto that reads the files ``kubmesh broker export-mosquitto`` writes."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest

from common.identities import Credentials, Role
from tests.brokers import Bus, bus_on_each_broker, connects  # noqa: F401 - fixture
from tests.conftest import RunningBroker
from tests.farm_system import Agent, Simulator
from tests.helpers import MqttWatcher, wait_until


def client(tool: str, bus: Bus, credentials: Credentials | None, *args: str) -> subprocess.CompletedProcess[str]:
    auth = ["-u", credentials.username, "-P", credentials.password] if credentials else []
    return subprocess.run([tool, "-h", "127.0.0.1", "-p", str(bus.port), *auth, *args],
                          capture_output=True, text=True, timeout=15)


def publish(bus: Bus, credentials: Credentials, topic: str, payload: str = "x", retain: bool = False) -> None:
    result = client("mosquitto_pub", bus, credentials, "-q", "1", "-t", topic, "-m", payload,
                    *(["-r"] if retain else []))
    assert result.returncode == 0, result.stderr  # both brokers drop a refused PUBLISH silently: check subscribers


def watch(bus: Bus, credentials: Credentials, topics: str | list[str]) -> MqttWatcher:
    watcher = MqttWatcher(bus.port, credentials.username, credentials.password, topics)
    wait_until(watcher.subscribed.is_set, 10, what=f"{credentials.username} subscribed")
    return watcher


def test_anonymous_and_wrong_passwords_are_refused(bus: Bus) -> None:
    anonymous = client("mosquitto_sub", bus, None, "-t", "kub/#", "-C", "1", "-W", "3")
    assert anonymous.returncode != 0 and "not authori" in anonymous.stderr.lower()
    wrong = client("mosquitto_sub", bus, Credentials("admin", "nope"), "-t", "kub/#", "-C", "1", "-W", "3")
    assert wrong.returncode != 0 and "not authori" in wrong.stderr.lower()
    assert not connects(bus.port, Credentials("ghost", "x"))
    assert connects(bus.port, bus.admin)


def test_a_farm_is_confined_to_its_own_topics(bus: Bus) -> None:
    farm_a = bus.add("farm-a", Role.FARM)
    farm_b = bus.add("farm-b", Role.FARM)
    admin = watch(bus, bus.admin, "kub/#")
    b_watch = watch(bus, farm_b, "kub/farms/farm-b/#")
    a_spy = watch(bus, farm_a, "kub/farms/farm-b/#")
    try:
        if bus.refuses_subscriptions:
            assert a_spy.granted[0].is_failure  # SUBACK 0x80
        publish(bus, farm_a, "kub/farms/farm-b/state", '{"forged": true}')
        publish(bus, farm_a, "kub/farms/farm-b/set/reset_alarms", "1")
        publish(bus, farm_a, "kub/farms/farm-a/set/reset_alarms", "1")  # a farm does not command itself
        publish(bus, farm_a, "kub/farms/farm-a/state", '{"own": true}')
        publish(bus, farm_b, "kub/farms/farm-b/state", '{"real": true}')
        wait_until(lambda: admin.last("kub/farms/farm-a/state") and admin.last("kub/farms/farm-b/state")
                   and b_watch.last("kub/farms/farm-b/state"), 5, what="the farms' own publishes")
        assert admin.payloads("kub/farms/farm-b/state") == [{"real": True}]
        assert b_watch.payloads("kub/farms/farm-b/state") == [{"real": True}]
        assert b_watch.payloads("kub/farms/farm-b/set/reset_alarms") == []
        assert admin.payloads("kub/farms/farm-a/set/reset_alarms") == []
        assert a_spy.messages == []
        if bus.kind == "embedded":
            assert "ACL refused publish of 'kub/farms/farm-b/state'" in bus.log()
    finally:
        for watcher in (admin, b_watch, a_spy):
            watcher.close()


def test_viewer_reads_but_cannot_publish_and_operator_may_command(bus: Bus) -> None:
    viewer = bus.add("vera", Role.VIEWER)
    operator = bus.add("olga", Role.OPERATOR)
    admin = watch(bus, bus.admin, "kub/#")
    reader = watch(bus, viewer, "kub/#")
    try:
        publish(bus, viewer, "kub/farms/farm-a/state", "{}")
        publish(bus, viewer, "kub/farms/farm-a/set/reset_alarms", "1")
        publish(bus, viewer, "kub/farms/vera/state", "{}")  # not even a farm named like itself
        publish(bus, operator, "kub/farms/farm-a/state", "{}")
        publish(bus, operator, "kub/farms/farm-a/set/reset_alarms", "2")
        wait_until(lambda: reader.payloads("kub/farms/farm-a/set/reset_alarms")
                   and admin.payloads("kub/farms/farm-a/set/reset_alarms"), 5, what="the operator's command")
        assert admin.payloads("kub/farms/farm-a/set/reset_alarms") == ["2"]
        assert admin.payloads("kub/farms/farm-a/state") == [] and admin.payloads("kub/farms/vera/state") == []
    finally:
        admin.close()
        reader.close()


def test_owner_scoped_people_get_and_command_only_their_farms_even_retained(bus: Bus) -> None:
    mine = bus.add("farm-mine", Role.FARM, owner="owner-a")
    theirs = bus.add("farm-theirs", Role.FARM, owner="owner-b")
    publish(bus, mine, "kub/farms/farm-mine/status", "mine", retain=True)
    publish(bus, theirs, "kub/farms/farm-theirs/status", "theirs", retain=True)
    scoped = bus.add("anna", Role.VIEWER, owner="owner-a")
    operator = bus.add("oleg", Role.OPERATOR, owner="owner-a")
    watcher = watch(bus, scoped, "kub/#")
    admin = watch(bus, bus.admin, "kub/farms/+/set/+")
    try:
        wait_until(lambda: watcher.last("kub/farms/farm-mine/status") == "mine", 5, what="own retained status")
        publish(bus, theirs, "kub/farms/farm-theirs/state", "live")
        publish(bus, mine, "kub/farms/farm-mine/state", "live")
        wait_until(lambda: watcher.last("kub/farms/farm-mine/state"), 5, what="own live state")
        assert all("farm-theirs" not in topic for topic, _, _ in watcher.messages)
        publish(bus, operator, "kub/farms/farm-theirs/set/reset_alarms", "1")
        publish(bus, operator, "kub/farms/farm-mine/set/reset_alarms", "1")
        wait_until(lambda: admin.payloads("kub/farms/farm-mine/set/reset_alarms"), 5, what="own command")
        assert admin.payloads("kub/farms/farm-theirs/set/reset_alarms") == []
    finally:
        watcher.close()
        admin.close()


def test_only_discovery_publishes_discovery_status(bus: Bus) -> None:
    discovery = bus.add("discovery", Role.DISCOVERY)
    farm = bus.add("farm-x", Role.FARM)
    operator = bus.add("olga", Role.OPERATOR)
    admin = watch(bus, bus.admin, "kub/discovery/status")
    try:
        publish(bus, farm, "kub/discovery/status", "offline")
        publish(bus, operator, "kub/discovery/status", "offline")
        publish(bus, discovery, "kub/discovery/status", "online")
        wait_until(lambda: admin.payloads("kub/discovery/status"), 5)
        assert admin.payloads("kub/discovery/status") == ["online"]
    finally:
        admin.close()


def test_a_farm_hears_the_discovery_status_and_nothing_else_of_discovery(bus: Bus) -> None:
    discovery = bus.add("discovery", Role.DISCOVERY)
    farm = bus.add("farm-x", Role.FARM)
    publish(bus, discovery, "kub/discovery/status", "offline", retain=True)
    publish(bus, discovery, "kub/discovery/other", "secret", retain=True)
    watcher = watch(bus, farm, "kub/discovery/status")
    try:
        wait_until(lambda: watcher.payloads("kub/discovery/status"), 5, what="the retained discovery status")
        assert watcher.payloads("kub/discovery/status") == ["offline"]
    finally:
        watcher.close()
    everything = MqttWatcher(bus.port, farm.username, farm.password, "kub/discovery/#")
    try:
        wait_until(lambda: everything.payloads("kub/discovery/status"), 5, what="the status through a wildcard")
        assert everything.payloads("kub/discovery/other") == []
    finally:
        everything.close()


def test_rotation_locks_out_the_old_token_and_removal_the_identity(bus: Bus) -> None:
    first = bus.add("farm-new", Role.FARM)
    assert connects(bus.port, first)
    rotated = bus.rotate("farm-new")
    assert not connects(bus.port, first)
    assert connects(bus.port, rotated)
    bus.remove("farm-new", rotated)
    assert not connects(bus.port, rotated)


@pytest.mark.parametrize("role", [Role.VIEWER, Role.OPERATOR])
def test_people_may_read_home_assistant_configs_of_farms(bus: Bus, role: Role) -> None:
    farm = bus.add("farm-ha", Role.FARM)
    person = bus.add("person", role)
    publish(bus, farm, "homeassistant/device/kubmesh-farm-ha/config", "{}", retain=True)
    publish(bus, farm, "homeassistant/device/kubmesh-other/config", "{}", retain=True)  # not its own: refused
    watcher = watch(bus, person, "homeassistant/#")
    try:
        wait_until(lambda: watcher.last("homeassistant/device/kubmesh-farm-ha/config") is not None, 5)
        assert watcher.payloads("homeassistant/device/kubmesh-other/config") == []
    finally:
        watcher.close()


def test_a_rotated_farm_agent_is_locked_out_and_the_new_token_works(bus: Bus, tmp_path: Path) -> None:
    farm_id = "farm-rot"
    old = bus.add(farm_id, Role.FARM, owner="owner-a")
    simulator = Simulator(tmp_path).start()
    watcher = watch(bus, bus.admin, f"kub/farms/{farm_id}/status")
    agents: list[Agent] = []

    def agent(credentials: Credentials) -> Agent:
        agents.append(Agent(tmp_path, tmp_path / f"agent-data-{len(agents)}", farm_id, bus.url(credentials),
                            simulator.modbus_url).start())
        return agents[-1]

    try:
        first = agent(old)
        wait_until(lambda: first.health()["broker"] == "connected", 10, what="agent with its first token")
        new = bus.rotate(farm_id)
        first.stop()
        locked_out = agent(old)
        wait_until(lambda: "not authori" in locked_out.process.output().lower(), 10,  # type: ignore[union-attr]
                   what="the broker refusing the old token")
        assert locked_out.health()["broker"] == "disconnected"
        locked_out.stop()
        watcher.messages.clear()
        renewed = agent(new)
        wait_until(lambda: renewed.health()["broker"] == "connected", 10, what="agent with the new token")
        wait_until(lambda: (watcher.last(f"kub/farms/{farm_id}/status") or {}).get("state") == "online", 10)
    finally:
        watcher.close()
        for running in agents:
            running.stop()
        simulator.stop()


def test_embedded_broker_delivers_every_message_while_clients_come_and_go(broker: RunningBroker) -> None:
    """amqtt walked its subscription table across awaits: a client leaving mid-delivery lost the message."""
    farm = broker.add("farm-busy", Role.FARM)
    watcher = MqttWatcher(broker.port, broker.admin.username, broker.admin.password, "kub/farms/farm-busy/events")
    wait_until(watcher.subscribed.is_set, 5)
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            passer = MqttWatcher(broker.port, broker.admin.username, broker.admin.password,
                                 [f"kub/x/{n}" for n in range(5)])
            passer.subscribed.wait(2)
            passer.close()

    churners = [threading.Thread(target=churn) for _ in range(4)]
    for thread in churners:
        thread.start()
    try:
        publisher = MqttWatcher(broker.port, farm.username, farm.password, "kub/farms/farm-busy/status")
        wait_until(publisher.subscribed.is_set, 5)
        for n in range(150):
            publisher.client.publish("kub/farms/farm-busy/events", str(n), qos=1)
        wait_until(lambda: len(watcher.messages) >= 150, 20, what="all 150 messages")
        publisher.close()
    finally:
        stop.set()
        for thread in churners:
            thread.join()
        watcher.close()
    assert "dictionary changed size" not in broker.process.output()


# what Home Assistant's MQTT integration subscribes to on every connect (discovery.py: its own prefix, then the
# discovery topics of the integrations whose manifests name one)
HA_SUBSCRIPTIONS = ["homeassistant/+/+/config", "homeassistant/device/+/config", "homeassistant/status",
                    "tasmota/discovery/#", "esphome/discover/#", "zigbee2mqtt/bridge/#", "kub/farms/+/state",
                    "kub/alerts/+", "kub/discovery/status"]


def test_a_home_assistant_login_does_what_home_assistant_does_and_no_more(bus: Bus) -> None:
    farm = bus.add("farm-ha", Role.FARM)
    home_assistant = bus.add("homeassistant", Role.HOMEASSISTANT)
    discovery = bus.add("discovery", Role.DISCOVERY)
    publish(bus, farm, "homeassistant/device/kubmesh-farm-ha/config", "{}", retain=True)
    publish(bus, discovery, "kub/alerts/farm-ha", '{"alerts": []}', retain=True)  # the open alerts entity's state
    ha = watch(bus, home_assistant, HA_SUBSCRIPTIONS)
    agent = watch(bus, farm, ["homeassistant/status", "kub/farms/farm-ha/set/+"])
    admin = watch(bus, bus.admin, "#")
    try:
        # every subscription granted (the foreign prefixes deliver nothing), so HA logs no failure
        assert all(not code.is_failure for code in ha.granted), ha.granted
        wait_until(lambda: ha.last("homeassistant/device/kubmesh-farm-ha/config") is not None, 5,
                   what="the farm's config")
        wait_until(lambda: ha.last("kub/alerts/farm-ha") == {"alerts": []}, 5, what="the farm's open alerts")
        # the birth message reaches the agents; HA's commands reach the farm
        publish(bus, home_assistant, "homeassistant/status", "online")
        publish(bus, home_assistant, "kub/farms/farm-ha/set/reset_alarms", "1")
        wait_until(lambda: agent.payloads("homeassistant/status") == ["online"], 5, what="the birth message")
        wait_until(lambda: agent.payloads("kub/farms/farm-ha/set/reset_alarms"), 5, what="HA's command")
        # nothing more: no farm's readings, no discovery of its own, no foreign integration's topics
        publish(bus, home_assistant, "kub/farms/farm-ha/state", "{}")
        publish(bus, home_assistant, "homeassistant/device/kubmesh-farm-ha/config", "")
        publish(bus, bus.admin, "tasmota/discovery/ABC123/config", "{}")
        publish(bus, bus.admin, "homeassistant/probe", "x")  # ordered after the others on the admin's session
        wait_until(lambda: admin.payloads("homeassistant/probe"), 5, what="the probe")
        assert admin.payloads("kub/farms/farm-ha/state") == []
        assert admin.payloads("homeassistant/device/kubmesh-farm-ha/config") == [{}]  # the retained one only
        wait_until(lambda: admin.payloads("tasmota/discovery/ABC123/config"), 5, what="the foreign config")
        assert ha.payloads("tasmota/discovery/ABC123/config") == []
    finally:
        for watcher in (ha, agent, admin):
            watcher.close()
    # and the broker's log stays quiet about HA's subscriptions
    assert "ACL refused subscribe" not in bus.log() and "tasmota/discovery/#' refused" not in bus.log()
