"""What the broker tuning touches keeps working: ACL decisions follow the identity store, sessions are
freed when their client leaves, retained messages and session take-over behave as before."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiomqtt
import paho.mqtt.client as paho
import pytest

from broker.access import AclCache
from broker.acl import Access, AclRules
from broker.core import KubBroker
from broker.server import BrokerSettings, start_broker, stop_broker
from common.identities import IdentityStore, Role
from contract.topics import Topics
from tests.conftest import RunningBroker
from tests.helpers import free_port, wait_until

TOPICS = Topics()


def test_acl_decisions_are_cached_and_dropped_when_the_identity_store_changes(tmp_path: Path) -> None:
    store = IdentityStore(tmp_path)
    store.add("farm-a", Role.FARM)
    viewer = store.add("viewer-a", Role.VIEWER, owner="alice")
    cache = AclCache(IdentityStore(tmp_path), AclRules())
    state = TOPICS.state("farm-a")

    assert cache.allowed("farm-a", Access.PUBLISH, state)
    assert not cache.allowed("farm-a", Access.PUBLISH, TOPICS.state("farm-b"))
    assert cache.allowed("farm-a", Access.PUBLISH, state)
    assert len(cache) == 2  # the repeated check was a lookup

    store.rotate("farm-a")  # new credentials, same rights
    cache.recheck_store()
    assert len(cache) == 0
    assert cache.allowed("farm-a", Access.PUBLISH, state)

    assert not cache.allowed("viewer-a", Access.RECEIVE, state)  # farm-a has no owner yet
    store.remove("farm-a")
    store.add("farm-a", Role.FARM, owner="alice")
    store.remove(viewer.username)
    store.add(viewer.username, Role.OPERATOR, owner="alice")
    cache.recheck_store()
    assert cache.allowed("viewer-a", Access.RECEIVE, state)
    assert cache.allowed("viewer-a", Access.PUBLISH, TOPICS.set("farm-a", "heater"))

    store.remove("farm-a")
    cache.recheck_store()
    assert not cache.allowed("farm-a", Access.PUBLISH, state)


def test_acl_cache_looks_at_the_store_again_after_its_recheck_interval(tmp_path: Path) -> None:
    store = IdentityStore(tmp_path)
    store.add("farm-a", Role.FARM)
    cache = AclCache(IdentityStore(tmp_path), AclRules())
    cache.RECHECK_S = 0.05
    assert cache.allowed("farm-a", Access.PUBLISH, TOPICS.state("farm-a"))
    store.remove("farm-a")
    wait_until(lambda: not cache.allowed("farm-a", Access.PUBLISH, TOPICS.state("farm-a")), 2,
               what="the removal to reach the cached decision")


class Subscriber:
    """A paho client that subscribes on demand and reports the granted QoS (128 = refused)."""

    def __init__(self, broker: RunningBroker, username: str, password: str) -> None:
        self.granted: dict[int, int] = {}
        self.done = threading.Condition()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=username, protocol=paho.MQTTv311)
        self.client.username_pw_set(username, password)
        self.client.on_subscribe = self._on_subscribe
        self.client.connect("127.0.0.1", broker.port, keepalive=30)
        self.client.loop_start()

    def _on_subscribe(self, client: paho.Client, userdata: object, mid: int, codes: list[paho.ReasonCode],
                      props: object = None) -> None:
        with self.done:
            self.granted[mid] = codes[0].value
            self.done.notify_all()

    def subscribe(self, topic: str) -> int:
        _, mid = self.client.subscribe(topic, qos=1)
        with self.done:
            self.done.wait_for(lambda: mid in self.granted, timeout=10)
        return self.granted[mid]

    def unsubscribe(self, topic: str) -> None:
        self.client.unsubscribe(topic)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_a_connected_farm_that_is_removed_loses_its_rights_without_reconnecting(broker: RunningBroker) -> None:
    farm = broker.add("farm-gone", Role.FARM)
    client = Subscriber(broker, farm.username, farm.password)
    try:
        commands = TOPICS.set_filter("farm-gone")
        wait_until(lambda: client.client.is_connected(), 10, what="the farm to connect")
        assert client.subscribe(commands) == 1
        client.unsubscribe(commands)  # the decision to subscribe stays cached in the broker
        broker.store.remove("farm-gone")
        wait_until(lambda: client.subscribe(commands) == 0x80, 10, what="the cached decision to be dropped")
    finally:
        client.close()


@pytest.fixture
async def embedded(tmp_path: Path) -> AsyncIterator[KubBroker]:
    """The embedded broker in this process, to look at its sessions."""
    settings = BrokerSettings(data_dir=tmp_path / "data", mqtt_host="127.0.0.1", mqtt_port=free_port())
    running = await start_broker(settings)
    yield running
    await stop_broker(running)


async def eventually(predicate: Callable[[], object], seconds: float, what: str) -> None:
    """wait_until for a test running on the broker's own event loop."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        await asyncio.sleep(0.05)


def _port(broker: KubBroker) -> int:
    return int(str(broker.frame.listeners_config["default"]["bind"]).rsplit(":", 1)[1])


async def test_a_farm_that_leaves_is_freed_and_its_retained_state_stays(embedded: KubBroker, tmp_path: Path) -> None:
    store = IdentityStore(tmp_path / "data")
    farm = store.add("farm-left", Role.FARM)
    admin = store.add("admin", Role.ADMIN)
    port = _port(embedded)
    async with aiomqtt.Client("127.0.0.1", port, identifier="farm-left", username=farm.username,
                              password=farm.password) as client:
        await client.publish(TOPICS.state("farm-left"), b'{"seq": 1}', qos=1, retain=True)
        session = weakref.ref(embedded.sessions["farm-left"][0])
    await eventually(lambda: "farm-left" not in embedded.sessions, 5, "the session to be dropped")
    # freed by reference counting alone: nothing (a retained message, a state machine) keeps it
    await eventually(lambda: session() is None, 5, "the session object to be freed")

    async with aiomqtt.Client("127.0.0.1", port, username=admin.username, password=admin.password) as reader:
        await reader.subscribe(TOPICS.state("farm-left"), qos=1)
        async with asyncio.timeout(5):
            message = await anext(aiter(reader.messages))
    assert message.retain and message.payload == b'{"seq": 1}'


async def test_a_second_connection_with_the_same_client_id_takes_the_session_over(
    embedded: KubBroker, tmp_path: Path
) -> None:
    farm = IdentityStore(tmp_path / "data").add("farm-twice", Role.FARM)
    port = _port(embedded)
    first = aiomqtt.Client("127.0.0.1", port, identifier="farm-twice", username=farm.username, password=farm.password)
    await first.__aenter__()
    try:
        async with aiomqtt.Client("127.0.0.1", port, identifier="farm-twice", username=farm.username,
                                  password=farm.password) as second:
            await second.publish(TOPICS.state("farm-twice"), b"{}", qos=1)
            assert embedded.sessions["farm-twice"][0].transitions.state == "connected"
        await eventually(lambda: "farm-twice" not in embedded.sessions, 5, "the session to be dropped")
    finally:
        with contextlib.suppress(aiomqtt.MqttError):  # the broker closed it when the second took over
            await first.__aexit__(None, None, None)
