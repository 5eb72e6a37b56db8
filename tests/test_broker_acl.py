"""The embedded broker authenticates every client and confines it to its topics (real broker, real clients)."""

from __future__ import annotations

import subprocess

import pytest

from broker.identities import Credentials, Role
from tests.conftest import RunningBroker
from tests.helpers import MqttWatcher, wait_until


def mosquitto(
    tool: str, broker: RunningBroker, credentials: Credentials | None, *args: str
) -> subprocess.CompletedProcess[str]:
    auth = ["-u", credentials.username, "-P", credentials.password] if credentials else []
    return subprocess.run([tool, "-h", "127.0.0.1", "-p", str(broker.port), *auth, *args],
                          capture_output=True, text=True, timeout=15)


def publish(
    broker: RunningBroker, credentials: Credentials, topic: str, payload: str = "x", retain: bool = False
) -> None:
    result = mosquitto("mosquitto_pub", broker, credentials, "-q", "1", "-t", topic, "-m", payload,
                       *(["-r"] if retain else []))
    assert result.returncode == 0, result.stderr  # amqtt drops a refused PUBLISH silently: check subscribers


def test_anonymous_and_wrong_passwords_are_refused(broker: RunningBroker) -> None:
    anonymous = mosquitto("mosquitto_sub", broker, None, "-t", "kub/#", "-C", "1", "-W", "3")
    assert anonymous.returncode != 0 and "not authori" in anonymous.stderr.lower()
    wrong = mosquitto("mosquitto_sub", broker, Credentials("admin", "nope"), "-t", "kub/#", "-C", "1", "-W", "3")
    assert wrong.returncode != 0 and "not authori" in wrong.stderr.lower()
    unknown = mosquitto("mosquitto_sub", broker, Credentials("ghost", "x"), "-t", "kub/#", "-C", "1", "-W", "3")
    assert unknown.returncode != 0


def test_a_farm_is_confined_to_its_own_topics(broker: RunningBroker) -> None:
    farm_a = broker.add("farm-a", Role.FARM)
    farm_b = broker.add("farm-b", Role.FARM)
    admin = MqttWatcher(broker.port, broker.admin.username, broker.admin.password, "kub/#")
    b_watch = MqttWatcher(broker.port, farm_b.username, farm_b.password, "kub/farms/farm-b/#")
    a_spy = MqttWatcher(broker.port, farm_a.username, farm_a.password, "kub/farms/farm-b/#")
    try:
        wait_until(lambda: admin.subscribed.is_set() and b_watch.subscribed.is_set() and a_spy.subscribed.is_set(), 5)
        assert a_spy.granted[0].is_failure  # subscribing to another farm is refused (0x80)
        publish(broker, farm_a, "kub/farms/farm-b/state", '{"forged": true}')
        publish(broker, farm_a, "kub/farms/farm-a/set/reset_alarms", "1")  # a farm does not command itself
        publish(broker, farm_a, "kub/farms/farm-a/state", '{"own": true}')
        wait_until(lambda: admin.last("kub/farms/farm-a/state"), 5, what="own publish arrives")
        assert admin.payloads("kub/farms/farm-b/state") == [] and b_watch.messages == []
        assert admin.payloads("kub/farms/farm-a/set/reset_alarms") == []
        assert "ACL refused publish of 'kub/farms/farm-b/state'" in broker.process.output()
    finally:
        for watcher in (admin, b_watch, a_spy):
            watcher.close()


def test_viewer_reads_but_cannot_publish_and_operator_may_command(broker: RunningBroker) -> None:
    viewer = broker.add("vera", Role.VIEWER)
    operator = broker.add("olga", Role.OPERATOR)
    admin = MqttWatcher(broker.port, broker.admin.username, broker.admin.password, "kub/#")
    try:
        wait_until(admin.subscribed.is_set, 5)
        publish(broker, viewer, "kub/farms/farm-a/state", "{}")
        publish(broker, viewer, "kub/farms/farm-a/set/reset_alarms", "1")
        publish(broker, operator, "kub/farms/farm-a/state", "{}")
        publish(broker, operator, "kub/farms/farm-a/set/reset_alarms", "2")
        wait_until(lambda: admin.payloads("kub/farms/farm-a/set/reset_alarms"), 5, what="operator command")
        assert admin.payloads("kub/farms/farm-a/set/reset_alarms") == ["2"]
        assert admin.payloads("kub/farms/farm-a/state") == []
        read = mosquitto("mosquitto_sub", broker, viewer, "-t", "kub/#", "-C", "1", "-W", "2")
        assert "not authori" not in read.stderr.lower()
    finally:
        admin.close()


def test_owner_scoped_viewer_gets_only_its_farms_even_retained(broker: RunningBroker) -> None:
    mine = broker.add("farm-mine", Role.FARM, owner="owner-a")
    theirs = broker.add("farm-theirs", Role.FARM, owner="owner-b")
    publish(broker, mine, "kub/farms/farm-mine/status", "mine", retain=True)
    publish(broker, theirs, "kub/farms/farm-theirs/status", "theirs", retain=True)
    scoped = broker.add("anna", Role.VIEWER, owner="owner-a")
    watcher = MqttWatcher(broker.port, scoped.username, scoped.password, "kub/#")
    try:
        wait_until(lambda: watcher.last("kub/farms/farm-mine/status") == "mine", 5, what="own retained status")
        publish(broker, theirs, "kub/farms/farm-theirs/state", "live")
        publish(broker, mine, "kub/farms/farm-mine/state", "live")
        wait_until(lambda: watcher.last("kub/farms/farm-mine/state"), 5, what="own live state")
        assert all("farm-theirs" not in topic for topic, _, _ in watcher.messages)
    finally:
        watcher.close()


def test_only_discovery_publishes_discovery_status(broker: RunningBroker) -> None:
    discovery = broker.add("discovery", Role.DISCOVERY)
    farm = broker.add("farm-x", Role.FARM)
    admin = MqttWatcher(broker.port, broker.admin.username, broker.admin.password, "kub/discovery/status")
    try:
        wait_until(admin.subscribed.is_set, 5)
        publish(broker, farm, "kub/discovery/status", "offline")
        publish(broker, discovery, "kub/discovery/status", "online")
        wait_until(lambda: admin.payloads("kub/discovery/status"), 5)
        assert admin.payloads("kub/discovery/status") == ["online"]
    finally:
        admin.close()


def test_identities_apply_without_restart_and_rotation_locks_out_the_old_token(broker: RunningBroker) -> None:
    first = broker.add("farm-new", Role.FARM)
    connected = mosquitto("mosquitto_pub", broker, first, "-t", "kub/farms/farm-new/status", "-m", "x")
    assert connected.returncode == 0
    rotated = broker.store.rotate("farm-new")
    old = mosquitto("mosquitto_pub", broker, first, "-t", "kub/farms/farm-new/status", "-m", "x")
    assert old.returncode != 0 and "not authori" in old.stderr.lower()
    assert mosquitto("mosquitto_pub", broker, rotated, "-t", "kub/farms/farm-new/status", "-m", "x").returncode == 0
    broker.store.remove("farm-new")
    assert mosquitto("mosquitto_pub", broker, rotated, "-t", "kub/farms/farm-new/status", "-m", "x").returncode != 0


@pytest.mark.parametrize("role", [Role.VIEWER, Role.OPERATOR])
def test_people_may_read_home_assistant_configs(broker: RunningBroker, role: Role) -> None:
    farm = broker.add("farm-ha", Role.FARM)
    person = broker.add("person", role)
    publish(broker, farm, "homeassistant/device/kubmesh-farm-ha/config", "{}", retain=True)
    publish(broker, farm, "homeassistant/device/kubmesh-other/config", "{}", retain=True)  # not its own: refused
    watcher = MqttWatcher(broker.port, person.username, person.password, "homeassistant/#")
    try:
        wait_until(lambda: watcher.last("homeassistant/device/kubmesh-farm-ha/config") is not None, 5)
        assert watcher.payloads("homeassistant/device/kubmesh-other/config") == []
    finally:
        watcher.close()
