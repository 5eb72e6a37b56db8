"""What one client may do to the broker and to the others: client ids belong to one identity, packets
and unreleased QoS 2 messages are bounded, failed logins are slowed down, and a command is never
retained. Against ``kubmesh broker`` (and Mosquitto configured as the README says, where the rule is
the broker's)."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from pydantic import ValidationError

from benchmarks.mqtt_load import PacketReader, connect_packet, subscribe_packet
from broker import login_throttle
from broker.core import KubBroker, Limits
from broker.login_throttle import LoginThrottle
from broker.mqtt_packets import remaining_length
from broker.server import BrokerSettings, broker_config, stop_broker
from common.identities import Credentials, IdentityStore, Role
from common.settings import load_settings
from contract.topics import HA_DEFAULT_PREFIX, Topics
from tests.brokers import ExportedMosquitto
from tests.conftest import RunningBroker
from tests.helpers import free_port, wait_until
from tests.test_broker_fastpath import RawClient

CONNACK, PUBLISH, PUBACK, PUBREC, PINGRESP = 2, 3, 4, 5, 13
PINGREQ_PACKET = b"\xc0\x00"
TOPICS = Topics()


def publish(topic: str, payload: bytes, qos: int = 1, packet_id: int = 1, retain: bool = False) -> bytes:
    body = struct.pack("!H", len(topic)) + topic.encode() + (struct.pack("!H", packet_id) if qos else b"") + payload
    return bytes([0x30 | qos << 1 | retain]) + remaining_length(len(body)) + body




def connected(port: int, client_id: str, who: Credentials, source: str | None = None,
              timeout: float = 5) -> tuple[RawClient, bytes]:
    """A raw connection and the CONNACK's body (b"\\x00\\x00" accepted, b"\\x00\\x05" not authorised)."""
    client = RawClient(port, source=source, timeout=timeout)
    client.send(connect_packet(client_id, who.username, who.password))
    return client, client.next(CONNACK)[1]


def still_connected(client: RawClient) -> bool:
    try:
        client.send(PINGREQ_PACKET)
        client.next(PINGRESP)
    except OSError:
        return False
    return True


# --- a client id belongs to one identity ---------------------------------------------------------------

@pytest.mark.parametrize("client_id", ["kubmesh-agent-farm-a", "farm-a-own-id"])
def test_another_identity_cannot_take_over_a_client_id_in_use(broker: RunningBroker, client_id: str) -> None:
    farm = broker.add("farm-a", Role.FARM)
    viewer = broker.add("viewer-a", Role.VIEWER)
    agent, code = connected(broker.port, client_id, farm)
    assert code == b"\x00\x00"
    intruder, code = connected(broker.port, client_id, viewer)
    assert code == b"\x00\x05"  # not authorised
    assert intruder.closed_by_broker()
    assert still_connected(agent), "the viewer's CONNECT ended the farm's connection"
    assert f"'viewer-a' may not use the client id {client_id!r}" in broker.process.output()


def test_the_ids_of_farm_agents_and_services_are_kept_for_them(broker: RunningBroker) -> None:
    broker.add("farm-b", Role.FARM)
    viewer = broker.add("viewer-b", Role.VIEWER)
    other_farm = broker.add("farm-c", Role.FARM)
    for client_id, who in [("kubmesh-agent-farm-b", viewer), ("kubmesh-agent-farm-b", other_farm),
                           ("kubmesh-discovery", viewer), ("kubmesh-discovery-b", viewer),
                           ("kubmesh-mobile-web", broker.admin)]:
        _, code = connected(broker.port, client_id, who)
        assert code == b"\x00\x05", f"{who.username} got the client id {client_id!r}"
    _, code = connected(broker.port, "kubmesh-agent-farm-c", other_farm)
    assert code == b"\x00\x00"


def test_the_same_identity_still_takes_over_its_own_stale_connection(broker: RunningBroker) -> None:
    farm = broker.add("farm-d", Role.FARM)
    stale, code = connected(broker.port, "kubmesh-agent-farm-d", farm)
    assert code == b"\x00\x00"
    fresh, code = connected(broker.port, "kubmesh-agent-farm-d", farm)
    assert code == b"\x00\x00"
    assert stale.closed_by_broker() and still_connected(fresh)


@pytest.fixture
def mosquitto_with_client_ids(data_dir: Path, tmp_path: Path) -> Iterator[tuple[ExportedMosquitto, IdentityStore]]:
    """Mosquitto with the exported files and the README's client id rule."""
    store = IdentityStore(data_dir)
    mosquitto = ExportedMosquitto(data_dir, tmp_path, extra=["use_username_as_clientid true"])
    yield mosquitto, store
    mosquitto.stop()


def test_mosquitto_configured_as_documented_keeps_a_farms_client_id_from_other_identities(
    mosquitto_with_client_ids: tuple[ExportedMosquitto, IdentityStore],
) -> None:
    mosquitto, store = mosquitto_with_client_ids
    farm = store.add("farm-m", Role.FARM)
    viewer = store.add("viewer-m", Role.VIEWER)
    mosquitto.start()
    agent, code = connected(mosquitto.port, "kubmesh-agent-farm-m", farm)
    assert code == b"\x00\x00"
    connected(mosquitto.port, "kubmesh-agent-farm-m", viewer)  # accepted as its own username instead
    assert still_connected(agent), "the viewer's CONNECT ended the farm's connection"


# --- memory: packet size, QoS 2 before its release -----------------------------------------------------

def test_a_packet_longer_than_the_maximum_is_refused_from_its_length_header(broker: RunningBroker) -> None:
    viewer = broker.add("viewer-e", Role.VIEWER)
    client, code = connected(broker.port, "viewer-e", viewer)
    assert code == b"\x00\x00"
    announced = remaining_length(200 * 1024 * 1024)  # a 200 MB packet
    client.send(b"\x32" + announced + b"\x00\x03a/b\x00\x01" + b"x" * 1000)
    assert client.closed_by_broker(), "the broker waits for the rest of a 200 MB packet"
    assert "more than the broker's maximum" in broker.process.output()


def test_the_maximum_packet_size_is_a_setting_that_keeps_room_for_the_largest_payload() -> None:
    settings = load_settings(BrokerSettings, env={"MQTT_MAX_PACKET_SIZE": "1048576"})
    assert settings.max_packet_bytes == 1_048_576
    with pytest.raises(ValidationError, match="max_packet_bytes"):
        BrokerSettings(max_packet_bytes=1000)


@pytest.fixture
async def in_process(tmp_path: Path) -> AsyncIterator[tuple[KubBroker, int, IdentityStore]]:
    """The embedded broker in this process with small limits, to look at what a session holds."""
    store = IdentityStore(tmp_path / "data")
    port = free_port()
    settings = BrokerSettings(data_dir=tmp_path / "data", mqtt_host="127.0.0.1", mqtt_port=port)
    broker = KubBroker(broker_config(settings), store, TOPICS, HA_DEFAULT_PREFIX,
                       Limits(max_unreleased=20, max_unreleased_bytes=64 * 1024))
    await broker.start()
    yield broker, port, store
    await stop_broker(broker)


class AsyncRaw:
    """Raw MQTT bytes from a test that shares the broker's event loop."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.packets = reader, writer, PacketReader()
        self.pending: list[tuple[int, int, bytes]] = []

    @classmethod
    async def connect(cls, port: int, client_id: str, who: Credentials) -> AsyncRaw:
        client = cls(*await asyncio.open_connection("127.0.0.1", port))
        client.writer.write(connect_packet(client_id, who.username, who.password))
        assert (await client.next())[0] == CONNACK
        return client

    async def next(self) -> tuple[int, int, bytes]:
        while not self.pending:
            data = await asyncio.wait_for(self.reader.read(65536), 5)
            if not data:
                raise ConnectionError("closed by the broker")
            self.pending.extend(self.packets.feed(data))
        return self.pending.pop(0)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


async def test_a_qos2_publish_the_acl_refuses_is_acknowledged_and_not_kept(
    in_process: tuple[KubBroker, int, IdentityStore],
) -> None:
    broker, port, store = in_process
    viewer = store.add("viewer-q", Role.VIEWER)
    client = await AsyncRaw.connect(port, "viewer-q", viewer)
    for packet_id in range(1, 51):
        await client.send(publish(TOPICS.state("farm-q"), b"x" * 65_000, qos=2, packet_id=packet_id))
        kind, _, body = await client.next()
        assert kind == PUBREC and body == packet_id.to_bytes(2, "big")
    assert len(broker.sessions["viewer-q"][0].inflight_in) == 0, "the broker keeps what the viewer may not publish"


async def test_a_client_holding_too_many_unreleased_qos2_messages_is_closed_and_they_are_dropped(
    in_process: tuple[KubBroker, int, IdentityStore],
) -> None:
    broker, port, store = in_process
    admin = store.add("admin", Role.ADMIN)
    client = await AsyncRaw.connect(port, "hoarder", admin)
    with pytest.raises(ConnectionError):
        for packet_id in range(1, 100):
            await client.send(publish("raw/hoard", b"x" * 1000, qos=2, packet_id=packet_id))
            assert (await client.next())[0] == PUBREC
    session = broker.sessions.get("hoarder")
    assert session is None or len(session[0].inflight_in) == 0


# --- failed logins -------------------------------------------------------------------------------------

def test_failed_logins_are_slowed_per_source_logged_rarely_and_do_not_lock_the_owner_out(
    broker: RunningBroker,
) -> None:
    operator = broker.add("operator-t", Role.OPERATOR)
    wrong = Credentials(operator.username, "not-the-password")
    guesses = [threading.Thread(target=_guess, args=(broker.port, f"guess-{n}", wrong)) for n in range(12)]
    for guess in guesses:  # at once, as a guesser would, before any delay applies
        guess.start()
    for guess in guesses:
        guess.join()
    # the guesser's address now waits longer for an answer than a client waits for its CONNACK
    with pytest.raises(TimeoutError):
        connected(broker.port, "guess-13", wrong, timeout=3)
    with pytest.raises(TimeoutError):
        connected(broker.port, "guess-right", operator, timeout=3)  # even the right password, from there
    _, code = connected(broker.port, "owner", operator, source="127.0.0.2")  # the owner, from elsewhere
    assert code == b"\x00\x00"
    refusals = [line for line in broker.process.output().splitlines() if "bad credentials for 'operator-t'" in line]
    assert 1 <= len(refusals) <= 2, refusals


def _guess(port: int, client_id: str, wrong: Credentials) -> None:
    with contextlib.suppress(OSError):  # a late one may wait longer than its timeout: it still counts
        client, code = connected(port, client_id, wrong)
        assert code == b"\x00\x05"
        client.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_login_throttle_grows_caps_forgets_and_spares_the_right_password() -> None:
    clock = Clock()
    throttle = LoginThrottle(max_delay_s=4.0, forget_s=60.0, clock=clock)
    delays = []
    for _ in range(8):
        delays.append(throttle.before_login("10.0.0.1"))
        throttle.failed("10.0.0.1", "olga", "bad credentials")
    assert delays == [0, 0, 0, 0.25, 0.5, 1.0, 2.0, 4.0]
    assert throttle.before_login("10.0.0.1") == 4.0  # capped
    assert throttle.before_login("10.0.0.2") == 0  # another source is not slowed before its check
    assert throttle.before_refusal("olga") == 4.0  # but a wrong password for that user is, from anywhere
    throttle.succeeded("10.0.0.1")
    assert throttle.before_login("10.0.0.1") == 0
    clock.now += 61
    assert throttle.before_refusal("olga") == 0  # forgotten


def test_the_login_throttle_keeps_a_bounded_number_of_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(login_throttle, "MAX_KEYS", 100)
    throttle = LoginThrottle()
    for n in range(1000):
        throttle.failed(f"10.0.{n // 256}.{n % 256}", f"user-{n}", "bad credentials")
    assert len(throttle._sources) == 100 and len(throttle._usernames) == 100


# --- commands are never retained -----------------------------------------------------------------------

def test_a_retained_set_command_is_delivered_live_and_never_retained(broker: RunningBroker) -> None:
    broker.add("farm-r", Role.FARM)
    command = TOPICS.set("farm-r", "heater")
    marker = TOPICS.state("farm-r")
    live = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="live", protocol=paho.MQTTv311)
    received: list[tuple[str, bool]] = []
    live.username_pw_set(broker.admin.username, broker.admin.password)
    live.on_message = lambda client, userdata, message: received.append((message.topic, bool(message.retain)))
    live.connect("127.0.0.1", broker.port)
    live.subscribe(TOPICS.set_filter("farm-r"), qos=1)
    live.loop_start()
    try:
        wait_until(live.is_connected, 5, what="the live subscriber")
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-u", broker.admin.username,
                        "-P", broker.admin.password, "-q", "1", "-r", "-t", command, "-m", '{"value": 1}'],
                       check=True, timeout=10)
        wait_until(lambda: received == [(command, False)], 5, what="the command delivered live")
    finally:
        live.loop_stop()
        live.disconnect()
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-u", broker.admin.username,
                    "-P", broker.admin.password, "-q", "1", "-r", "-t", marker, "-m", "{}"], check=True, timeout=10)
    later, code = connected(broker.port, "later", broker.admin)
    assert code == b"\x00\x00"
    later.send(subscribe_packet(TOPICS.farm_filter("farm-r"), qos=1))
    _, body = later.next(PUBLISH)  # every retained message goes out at once: a retained command first
    assert body.startswith(struct.pack("!H", len(marker)) + marker.encode()), body[:60]

