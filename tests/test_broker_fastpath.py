"""The embedded broker's own connection handling (broker/fastpath.py) and filter index
(broker/topic_index.py): raw MQTT bytes against ``kubmesh broker``, the index against amqtt's matching."""

from __future__ import annotations

import logging
import socket
import types
from collections.abc import Iterator

import pytest
from amqtt.broker import Broker
from hypothesis import given
from hypothesis import strategies as st

from benchmarks.mqtt_load import PacketReader, connect_packet, publish_packet, subscribe_packet
from broker.identities import Role
from broker.topic_index import FilterIndex
from broker.topics import Topics
from tests.conftest import RunningBroker

CONNACK, PUBLISH, PUBACK, SUBACK = 2, 3, 4, 9
TOPICS = Topics()
LEVELS = st.sampled_from(["a", "b", "", "$s"])


def _amqtt_matches(topic: str, topic_filter: str) -> bool:
    return bool(Broker._matches(types.SimpleNamespace(logger=logging.getLogger("amqtt")), topic, topic_filter))


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
        assert sorted(index.match(name)) == sorted(f for f in table if _amqtt_matches(name, f))
    gone = data.draw(st.lists(st.sampled_from(table), unique=True) if table else st.just([]))
    for topic_filter in gone:
        index.remove(topic_filter)
    for name in names:
        assert sorted(index.match(name)) == sorted(f for f in table if f not in gone and _amqtt_matches(name, f))


class RawClient:
    """A blocking socket speaking MQTT bytes, to send what a library would not."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
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
        except (TimeoutError, ConnectionResetError):
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
    payload = bytes(range(256)) * 4096  # 1 MiB
    sender.send(publish_packet(b"raw/big", 5, payload, retain=False))
    assert sender.next(PUBACK)[1] == b"\x00\x05"
    _, body = reader.next(PUBLISH)
    assert body[:9] == b"\x00\x07raw/big" and body[11:] == payload


def test_a_first_packet_larger_than_any_connect_is_refused_at_its_header(broker: RunningBroker) -> None:
    client = RawClient(broker.port)
    client.send(b"\x10\xff\xff\xff\x7f")  # a CONNECT announcing 256 MB
    assert client.closed_by_broker()
