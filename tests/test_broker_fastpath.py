"""The embedded broker's own connection handling (broker/fastpath.py), sessions (broker/sessions.py) and
filter index (broker/topic_index.py): raw MQTT bytes against ``kubmesh broker``, the index against amqtt's
matching."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from hypothesis import given
from hypothesis import strategies as st

from benchmarks.mqtt_load import PacketReader, connect_packet, publish_packet, subscribe_packet
from broker import sessions
from broker.amqtt_adapter import LeanSession, amqtt_matches
from broker.sessions import SessionTable
from broker.topic_index import FilterIndex
from common.identities import IdentityStore, Role
from contract.topics import Topics
from tests.conftest import RunningBroker
from tests.helpers import ServiceProcess, free_port, wait_until

CONNACK, PUBLISH, PUBACK, SUBACK = 2, 3, 4, 9
TOPICS = Topics()
LEVELS = st.sampled_from(["a", "b", "", "$s"])


topics = st.lists(LEVELS, min_size=1, max_size=4).map("/".join)
filters = st.builds(
    lambda levels, tail: "/".join(levels + tail),
    st.lists(st.one_of(LEVELS, st.just("+")), max_size=3),
    st.sampled_from([[], ["#"], ["+"], ["a"]]),
).filter(bool)


@given(st.lists(filters, max_size=8, unique=True), st.lists(topics, min_size=1, max_size=8), st.data())
def test_the_filter_index_matches_as_amqtt_does(table: list[str], names: list[str], data: st.DataObject) -> None:
    index = FilterIndex(table)
    for name in names:
        assert sorted(index.match(name)) == sorted(f for f in table if amqtt_matches(name, f))
    gone = data.draw(st.lists(st.sampled_from(table), unique=True) if table else st.just([]))
    for topic_filter in gone:
        index.remove(topic_filter)
    for name in names:
        assert sorted(index.match(name)) == sorted(f for f in table if f not in gone and amqtt_matches(name, f))


class RawClient:
    """A blocking socket speaking MQTT bytes, to send what a library would not."""

    def __init__(self, port: int, receive_buffer: int | None = None, source: str | None = None,
                 timeout: float = 5) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:  # set before connecting: the kernel then keeps it this small
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        if source is not None:  # another loopback address: another client as far as the broker knows
            self.sock.bind((source, 0))
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = PacketReader()
        self.packets: list[tuple[int, int, bytes]] = []

    def send(self, data: bytes, byte_by_byte: bool = False) -> None:
        if byte_by_byte:
            for byte in data:
                self.sock.sendall(bytes((byte,)))
        else:
            self.sock.sendall(data)

    def next(self, kind: int) -> tuple[int, bytes]:
        """The next packet of this type (flags, body); raises ConnectionError if the broker closes first."""
        while True:
            for index, (got, flags, body) in enumerate(self.packets):
                if got == kind:
                    del self.packets[index]
                    return flags, body
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed by the broker")
            self.packets.extend(self.reader.feed(data))

    def closed_by_broker(self) -> bool:
        try:
            while self.sock.recv(65536):
                pass
        except ConnectionResetError:
            return True  # closed with unread data: a reset
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self.sock.close()


def _connected(broker: RunningBroker, client_id: str, username: str, password: str) -> RawClient:
    client = RawClient(broker.port)
    client.send(connect_packet(client_id, username, password))
    return client


@pytest.fixture
def reader(broker: RunningBroker) -> Iterator[RawClient]:
    """The admin, subscribed to ``raw/#`` at QoS 1."""
    admin = broker.admin
    reader = _connected(broker, "reader", admin.username, admin.password)
    assert reader.next(CONNACK)[1] == b"\x00\x00"
    reader.send(subscribe_packet("raw/#", qos=1))
    assert reader.next(SUBACK)[1][2] == 1
    yield reader
    reader.close()


def test_a_packet_mqtt_forbids_ends_that_connection_only(broker: RunningBroker, reader: RawClient) -> None:
    admin = broker.admin
    bad = _connected(broker, "bad", admin.username, admin.password)
    assert bad.next(CONNACK)[1] == b"\x00\x00"
    bad.send(bytes((0x36, 5)) + b"\x00\x01a\x00\x01")  # PUBLISH with QoS 3
    assert bad.closed_by_broker()
    first = RawClient(broker.port)
    first.send(publish_packet(b"raw/x", 1, b"before connect"))  # not a CONNECT first
    assert first.closed_by_broker()
    good = _connected(broker, "good", admin.username, admin.password)
    assert good.next(CONNACK)[1] == b"\x00\x00"
    good.send(publish_packet(b"raw/ok", 7, b"still here", retain=False))
    assert good.next(PUBACK)[1] == b"\x00\x07"
    _, body = reader.next(PUBLISH)
    assert body.startswith(b"\x00\x06raw/ok") and body.endswith(b"still here")


def test_packets_cut_into_single_bytes_are_put_together(broker: RunningBroker) -> None:
    admin = broker.admin
    client = RawClient(broker.port)
    wire = (connect_packet("slow", admin.username, admin.password) + subscribe_packet("raw/slow", 3, qos=1)
            + publish_packet(b"raw/slow", 9, b"x" * 300, retain=False))  # 300 bytes: a two-byte length
    client.send(wire, byte_by_byte=True)
    assert client.next(CONNACK)[1] == b"\x00\x00"
    assert client.next(SUBACK)[1] == b"\x00\x03\x01"
    assert client.next(PUBACK)[1] == b"\x00\x09"
    flags, body = client.next(PUBLISH)
    assert flags == 0x02 and body.endswith(b"x" * 300)


def test_a_refused_connect_leaves_the_client_with_that_id_connected(broker: RunningBroker) -> None:
    farm = broker.add("farm-kept", Role.FARM)
    live = _connected(broker, "farm-kept", farm.username, farm.password)
    assert live.next(CONNACK)[1] == b"\x00\x00"
    live.send(subscribe_packet(TOPICS.set_filter("farm-kept"), qos=1))
    assert live.next(SUBACK)[1][2] == 1
    impostor = _connected(broker, "farm-kept", farm.username, "wrong")
    assert impostor.next(CONNACK)[1] == b"\x00\x05"
    assert impostor.closed_by_broker()
    admin = _connected(broker, "commander", broker.admin.username, broker.admin.password)
    assert admin.next(CONNACK)[1] == b"\x00\x00"
    admin.send(publish_packet(TOPICS.set("farm-kept", "reset_alarms").encode(), 1, b'{"value": 1}', retain=False))
    _, body = live.next(PUBLISH)
    assert body.endswith(b'{"value": 1}')


def test_a_large_message_arriving_in_many_reads_is_delivered_whole(broker: RunningBroker, reader: RawClient) -> None:
    sender = _connected(broker, "big", broker.admin.username, broker.admin.password)
    assert sender.next(CONNACK)[1] == b"\x00\x00"
    payload = bytes(range(256)) * 1000  # 250 KiB: under the maximum packet size, over many reads
    sender.send(publish_packet(b"raw/big", 5, payload, retain=False))
    assert sender.next(PUBACK)[1] == b"\x00\x05"
    _, body = reader.next(PUBLISH)
    assert body[:9] == b"\x00\x07raw/big" and body[11:] == payload


def test_a_first_packet_larger_than_any_connect_is_refused_at_its_header(broker: RunningBroker) -> None:
    client = RawClient(broker.port)
    client.send(b"\x10\xff\xff\xff\x7f")  # a CONNECT announcing 256 MB
    assert client.closed_by_broker()


def test_a_subscriber_that_stops_reading_is_closed_and_the_others_get_everything(
    broker: RunningBroker, reader: RawClient
) -> None:
    admin = broker.admin
    stalled = RawClient(broker.port, receive_buffer=16 * 1024)
    stalled.send(connect_packet("stalled", admin.username, admin.password) + subscribe_packet("raw/#", qos=0))
    assert stalled.next(CONNACK)[1] == b"\x00\x00" and stalled.next(SUBACK)[1][2] == 0
    sender = _connected(broker, "flood", admin.username, admin.password)
    assert sender.next(CONNACK)[1] == b"\x00\x00"
    payload = b"x" * (256 * 1024)  # the largest payload the contract allows
    for packet_id in range(1, 321):  # 80 MiB: more than the broker holds for a client that does not read
        sender.send(publish_packet(b"raw/flood", packet_id, payload, retain=False))
        assert sender.next(PUBACK)[1] == packet_id.to_bytes(2, "big")
        _, body = reader.next(PUBLISH)
        assert body.endswith(payload)
    assert stalled.closed_by_broker(), "the broker still holds the connection of a client that stopped reading"
    log = broker.process.output()
    assert "'stalled'" in log and "unread" in log
    sender.send(publish_packet(b"raw/after", 99, b"still serving", retain=False))
    assert sender.next(PUBACK)[1] == b"\x00\x63"
    assert reader.next(PUBLISH)[1].endswith(b"still serving")


def test_an_offline_session_keeps_a_bounded_queue_and_counts_what_it_drops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sessions, "MAX_QUEUED_OFFLINE", 3)
    table = SessionTable(lambda session: None)
    session = LeanSession()
    for n in range(5):
        table.queue_offline(session, "kub/farms/f/state", b"%d" % n, 1)
    assert [message.data for message in table.take_queued(session)] == [b"0", b"1", b"2"]
    assert table.offline_dropped == 2


def test_an_offline_session_keeps_a_bounded_number_of_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sessions, "MAX_QUEUED_OFFLINE_BYTES", 2500)
    table = SessionTable(lambda session: None)
    session = LeanSession()
    for n in range(5):
        table.queue_offline(session, "kub/farms/f/set/x", bytes([n]) * 1000, 1)
    assert [message.data[0] for message in table.take_queued(session)] == [0, 1]
    assert table.offline_dropped == 3
    table.queue_offline(session, "kub/farms/f/set/x", b"again" * 200, 1)  # delivered: room again
    assert len(table.take_queued(session)) == 1


def test_a_publish_to_the_brokers_own_topics_is_acknowledged_and_dropped(broker: RunningBroker) -> None:
    admin = broker.admin
    watcher = _connected(broker, "watcher", admin.username, admin.password)
    assert watcher.next(CONNACK)[1] == b"\x00\x00"
    watcher.send(subscribe_packet("$SYS/#", qos=1, packet_id=1) + subscribe_packet("raw/#", qos=1, packet_id=2))
    assert watcher.next(SUBACK)[1][:2] == b"\x00\x01" and watcher.next(SUBACK)[1][:2] == b"\x00\x02"
    sender = _connected(broker, "sys-writer", admin.username, admin.password)
    assert sender.next(CONNACK)[1] == b"\x00\x00"
    sender.send(publish_packet(b"$SYS/broker/uptime", 4, b"forged", retain=False))
    assert sender.next(PUBACK)[1] == b"\x00\x04"  # acknowledged, and the connection stays
    sender.send(publish_packet(b"raw/after", 5, b"next", retain=False))
    assert sender.next(PUBACK)[1] == b"\x00\x05"
    _, body = watcher.next(PUBLISH)
    assert body.startswith(b"\x00\x09raw/after")  # the forged one never reached a subscriber


class PersistentClient:
    """A paho client with a persistent session: whether the broker still had it, and what it receives."""

    def __init__(self, port: int, client_id: str, username: str, password: str) -> None:
        self.present: list[bool] = []
        self.received: list[bytes] = []
        self.subscribed: list[int] = []
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv311,
                                  clean_session=False)
        self.client.username_pw_set(username, password)
        self.client.on_connect = lambda _c, _u, flags, _rc, _p: self.present.append(flags.session_present)
        self.client.on_message = lambda _c, _u, message: self.received.append(message.payload)
        self.client.on_subscribe = lambda _c, _u, mid, _codes, _p: self.subscribed.append(mid)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        wait_until(lambda: self.present, 5, what=f"{client_id} connected")

    @property
    def session_present(self) -> bool:
        return self.present[0]

    def subscribe(self, topic: str) -> None:
        mid = self.client.subscribe(topic, qos=1)[1]
        wait_until(lambda: mid in self.subscribed, 5, what=f"subscribed to {topic}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_an_offline_persistent_session_expires(data_dir: Path, tmp_path: Path) -> None:
    admin = IdentityStore(data_dir).add("admin", Role.ADMIN)
    port = free_port()
    process = ServiceProcess(
        ["broker", "--data-dir", str(data_dir), "--mqtt-host", "127.0.0.1", "--mqtt-port", str(port)],
        tmp_path / "broker.log", env={"MQTT_SESSION_EXPIRY": "3"},
    ).wait_port(port)
    clients: list[PersistentClient] = []

    def persistent(client_id: str) -> PersistentClient:
        clients.append(PersistentClient(port, client_id, admin.username, admin.password))
        return clients[-1]

    try:
        for client_id in ("kept", "expired"):
            client = persistent(client_id)
            client.subscribe("raw/expiry")
            client.close()
        kept = persistent("kept")  # back within the expiry: its session is there
        assert kept.session_present
        kept.close()
        wait_until(lambda: "dropped the session of 'expired'" in process.output(), 15, what="the session expired")
        sender = persistent("sender")
        sender.client.publish("raw/expiry", b"after", qos=1).wait_for_publish(5)
        again = persistent("expired")
        assert not again.session_present  # it expired, with its subscription: nothing was queued for it
        again.subscribe("raw/expiry")
        sender.client.publish("raw/expiry", b"live", qos=1).wait_for_publish(5)
        wait_until(lambda: again.received, 5, what="a live message on the new session")
        assert again.received == [b"live"]
    finally:
        for client in clients:
            client.close()
        process.stop()


def test_a_persistent_session_is_resumed_only_by_the_user_that_made_it(broker: RunningBroker) -> None:
    other = broker.add("other-admin", Role.ADMIN)
    owner = PersistentClient(broker.port, "shared-id", broker.admin.username, broker.admin.password)
    owner.subscribe("raw/private")
    owner.close()
    back = PersistentClient(broker.port, "shared-id", broker.admin.username, broker.admin.password)
    assert back.session_present
    back.close()
    intruder = PersistentClient(broker.port, "shared-id", other.username, other.password)
    try:
        assert not intruder.session_present  # the session, its subscriptions and its queue are not another's
    finally:
        intruder.close()


def test_a_repeated_subscription_takes_the_new_qos(broker: RunningBroker, reader: RawClient) -> None:
    reader.send(subscribe_packet("raw/#", packet_id=7, qos=0))  # the fixture subscribed at QoS 1
    assert reader.next(SUBACK)[1] == b"\x00\x07\x00"
    sender = _connected(broker, "qos-sender", broker.admin.username, broker.admin.password)
    assert sender.next(CONNACK)[1] == b"\x00\x00"
    sender.send(publish_packet(b"raw/qos", 3, b"one copy at QoS 0", retain=False))
    assert sender.next(PUBACK)[1] == b"\x00\x03"
    flags, body = reader.next(PUBLISH)
    assert flags >> 1 & 3 == 0 and body == b"\x00\x07raw/qosone copy at QoS 0"


def test_a_second_connection_with_the_same_client_id_takes_over(broker: RunningBroker) -> None:
    admin = broker.admin
    first = _connected(broker, "twice", admin.username, admin.password)
    assert first.next(CONNACK)[1] == b"\x00\x00"
    second = _connected(broker, "twice", admin.username, admin.password)
    assert second.next(CONNACK)[1] == b"\x00\x00"
    assert first.closed_by_broker()  # §3.1.4-2, clean sessions too
    second.send(b"\xc0\x00")  # PINGREQ: the new one is served
    second.next(13)
