"""What store-and-forward relies on from a broker, checked with raw paho clients against the embedded
broker and against Mosquitto: the same test, the same expectations."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import paho.mqtt.client as paho
import pytest

from common.identities import Role
from tests.conftest import RunningBroker
from tests.helpers import wait_until


@dataclass
class Endpoint:
    """A broker under test: its port and a way to make a user who may do anything."""

    port: int
    add_user: Callable[[str], str]


@pytest.fixture(params=["embedded", "mosquitto"])
def endpoint(request: pytest.FixtureRequest) -> Endpoint:
    if request.param == "embedded":
        broker = request.getfixturevalue("broker")
        return Endpoint(broker.port, lambda name: broker.add(name, Role.ADMIN).password)
    mosquitto = request.getfixturevalue("mosquitto")

    def add(name: str) -> str:
        password = secrets.token_hex(8)
        mosquitto.add_user(name, password)
        return password

    return Endpoint(mosquitto.port, add)


@dataclass
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    mid: int


@dataclass
class RawClient:
    """A paho client that records what it receives; ``manual_ack`` leaves QoS 1 messages unacknowledged."""

    endpoint: Endpoint
    client_id: str
    password: str
    clean_session: bool = True
    keepalive: int = 30
    manual_ack: bool = False
    will: tuple[str, bytes] | None = None
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self.session_present: bool | None = None
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                                  clean_session=self.clean_session, protocol=paho.MQTTv311,
                                  manual_ack=self.manual_ack)
        self.client.username_pw_set(self.client_id, self.password)
        if self.will:
            self.client.will_set(self.will[0], self.will[1], qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message

    def _on_connect(self, client: paho.Client, userdata: object, flags: paho.ConnectFlags, rc: object,
                    props: object = None) -> None:
        self.session_present = flags.session_present
        self.connected.set()

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        with self.lock:
            self.received.append(Received(msg.topic, msg.payload, msg.qos, bool(msg.retain), bool(msg.dup), msg.mid))

    def start(self) -> RawClient:
        self.client.connect("127.0.0.1", self.endpoint.port, keepalive=self.keepalive)
        self.client.loop_start()
        wait_until(self.connected.is_set, 5, what=f"{self.client_id} connected")
        return self

    def subscribe(self, topic: str, qos: int) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *args: done.set()
        self.client.subscribe(topic, qos)
        wait_until(done.is_set, 5, what=f"{self.client_id} subscribed to {topic}")

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(5)

    def messages(self, topic: str) -> list[Received]:
        with self.lock:
            return [m for m in self.received if m.topic == topic]

    def go_silent(self) -> None:
        """Stop the network loop and keep the socket open: no more pings, no DISCONNECT, no FIN."""
        self.client.loop_stop()

    def drop(self) -> None:
        """Close the socket without a DISCONNECT, as a crash would."""
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.close()

    def disconnect(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def clients(endpoint: Endpoint) -> Iterator[Callable[..., RawClient]]:
    made: list[RawClient] = []
    passwords: dict[str, str] = {}

    def make(client_id: str, **options: object) -> RawClient:
        if client_id not in passwords:
            passwords[client_id] = endpoint.add_user(client_id)
        client = RawClient(endpoint, client_id, passwords[client_id], **options)  # type: ignore[arg-type]
        made.append(client)
        return client

    yield make
    for client in made:
        client.client.loop_stop()
        client.client.disconnect()


def test_will_is_sent_when_keepalive_expires_on_a_silent_connection(clients: Callable[..., RawClient]) -> None:
    watcher = clients("watcher").start()
    watcher.subscribe("promise/status", 1)
    silent = clients("silent", keepalive=2, will=("promise/status", b"offline")).start()
    silent.publish("promise/status", b"online", retain=True)
    wait_until(lambda: watcher.messages("promise/status"), 5, what="online")
    silent.go_silent()
    # MQTT 3.1.1 §3.1.2.10: the server disconnects after 1.5 × keepalive without a packet, sending the will
    wait_until(lambda: [m.payload for m in watcher.messages("promise/status")] == [b"online", b"offline"], 8,
               what="the will after the keepalive expired")
    late = clients("late").start()
    late.subscribe("promise/status", 1)
    wait_until(lambda: late.messages("promise/status"), 5, what="retained will")
    assert late.messages("promise/status")[0].payload == b"offline"


def test_qos1_messages_are_queued_for_an_offline_persistent_session(clients: Callable[..., RawClient]) -> None:
    subscriber = clients("recorder", clean_session=False).start()
    subscriber.subscribe("promise/queue", 1)
    subscriber.disconnect()
    publisher = clients("publisher").start()
    for number in range(5):
        publisher.publish("promise/queue", str(number).encode())
    back = clients("recorder", clean_session=False).start()
    assert back.session_present
    wait_until(lambda: len(back.messages("promise/queue")) == 5, 5, what="the queued messages")
    got = back.messages("promise/queue")
    assert [m.payload for m in got] == [b"0", b"1", b"2", b"3", b"4"]
    assert all(m.qos == 1 and not m.retain for m in got)  # queued live messages, not retained ones


def test_unacknowledged_qos1_message_is_redelivered_on_reconnect(clients: Callable[..., RawClient]) -> None:
    subscriber = clients("forgetful", clean_session=False, manual_ack=True).start()
    subscriber.subscribe("promise/inflight", 1)
    publisher = clients("sender").start()
    publisher.publish("promise/inflight", b"important")
    wait_until(lambda: subscriber.messages("promise/inflight"), 5, what="first delivery")
    subscriber.drop()  # never acknowledged
    back = clients("forgetful", clean_session=False).start()
    wait_until(lambda: back.messages("promise/inflight"), 8, what="redelivery")
    again = back.messages("promise/inflight")[0]
    assert again.payload == b"important" and again.qos == 1 and again.dup


@pytest.mark.parametrize("sub_qos", [0, 1])
def test_retained_messages_arrive_at_the_lower_of_message_and_subscription_qos(
    clients: Callable[..., RawClient], sub_qos: int
) -> None:
    publisher = clients("keeper").start()
    publisher.publish("promise/retained/q0", b"zero", qos=0, retain=True)
    publisher.publish("promise/retained/q1", b"one", qos=1, retain=True)
    reader = clients("reader").start()
    reader.subscribe("promise/retained/#", sub_qos)
    wait_until(lambda: len(reader.received) == 2, 5, what="both retained messages")
    assert {m.topic: m.qos for m in reader.received} == {
        "promise/retained/q0": 0,
        "promise/retained/q1": min(1, sub_qos),
    }
    assert all(m.retain for m in reader.received)



def test_qos2_messages_arrive_once_each_at_the_lower_of_message_and_subscription_qos(
    clients: Callable[..., RawClient],
) -> None:
    reader = clients("exact").start()
    reader.subscribe("promise/exact", 2)
    writer = clients("careful").start()
    writer.publish("promise/exact", b"two", qos=2)
    writer.publish("promise/exact", b"zero", qos=0)
    writer.publish("promise/exact", b"last", qos=2)
    wait_until(lambda: len(reader.messages("promise/exact")) >= 3, 5, what="the three messages")
    # paho hands a QoS 2 message over at PUBREL, so the QoS 0 one may come first
    assert sorted((m.payload, m.qos) for m in reader.messages("promise/exact")) == [
        (b"last", 2), (b"two", 2), (b"zero", 0)
    ]


def test_a_client_back_on_a_new_connection_is_not_declared_dead_by_its_old_one(
    clients: Callable[..., RawClient],
) -> None:
    watcher = clients("observer").start()
    watcher.subscribe("promise/presence", 1)
    old = clients("roamer", keepalive=2, will=("promise/presence", b"offline")).start()
    old.go_silent()  # its link died without a FIN: the broker still holds that connection
    new = clients("roamer", keepalive=2, will=("promise/presence", b"offline")).start()
    new.publish("promise/presence", b"online", retain=True)
    wait_until(lambda: any(m.payload == b"online" for m in watcher.messages("promise/presence")), 5, what="online")
    time.sleep(4)  # the scenario: past 1.5 × the old connection's keepalive
    # MQTT 3.1.1 §3.1.4: the new connection takes the old one over; the old one's will must not follow "online"
    payloads = [m.payload for m in watcher.messages("promise/presence")]
    assert payloads[payloads.index(b"online"):] == [b"online"], payloads


def test_a_persistent_session_taken_over_by_a_new_connection_keeps_receiving(
    clients: Callable[..., RawClient],
) -> None:
    old = clients("recorder", clean_session=False, keepalive=2).start()
    old.subscribe("promise/takeover", 1)
    old.go_silent()  # half-open: the broker still holds this connection
    new = clients("recorder", clean_session=False, keepalive=2).start()
    assert new.session_present
    publisher = clients("talker").start()
    for number in range(3):
        publisher.publish("promise/takeover", str(number).encode())
        time.sleep(1.5)  # the scenario: the publishes span the old connection's keepalive expiry
    wait_until(lambda: len(new.messages("promise/takeover")) == 3, 5, what="live delivery to the new connection")


def test_a_subscriber_behind_by_every_packet_id_keeps_its_connection_and_gets_the_rest_as_it_acknowledges(
    broker: RunningBroker,
) -> None:
    """Embedded broker only: a QoS 1 subscriber that has all 65,535 packet ids unacknowledged (a history node
    committing a long replay) is kept; what comes meanwhile waits in its session and goes as ids come free.
    (Mosquitto holds its 20 in flight and drops what is beyond `max_queued_messages`.)"""
    endpoint = Endpoint(broker.port, lambda name: broker.add(name, Role.ADMIN).password)
    subscriber = RawClient(endpoint, "behind", endpoint.add_user("behind"), clean_session=False,
                           manual_ack=True).start()
    publisher = RawClient(endpoint, "flood", endpoint.add_user("flood"))
    publisher.client.max_inflight_messages_set(1000)
    publisher.start()
    try:
        subscriber.subscribe("promise/window", 1)
        count = 65_535 + 500
        for number in range(count):
            last = publisher.client.publish("promise/window", str(number).encode(), qos=1)
        last.wait_for_publish(120)
        wait_until(lambda: len(subscriber.received) >= 65_535, 60, what="every packet id in use")
        assert len(subscriber.received) == 65_535  # the rest wait for an acknowledgement
        for message in list(subscriber.received):
            subscriber.client.ack(message.mid, 1)
        wait_until(lambda: len(subscriber.received) == count, 60, what="the rest, as ids came free")
        assert subscriber.client.is_connected()
        assert [int(m.payload) for m in subscriber.received] == list(range(count))  # in order, none twice
    finally:
        for client in (subscriber, publisher):
            client.disconnect()
