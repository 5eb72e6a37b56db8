"""1,000 malformed and hostile inputs against the running system: the discovery node with its embedded
broker, a simulated controller that records every write, a farm agent, and the mobile web.

Seeded random and boundary inputs: MQTT payloads on ``set/…`` and ``state`` (random bytes, deep
nesting, huge numbers, NaN, more than 256 KiB, wrong types), topic names no client should send (sent
as raw MQTT packets, so no client library cleans them up first), path traversal and SQL
metacharacters in REST paths, parameters and farm ids, and broken or forged cookies on the web.
Afterwards: every process alive, no answer was a 5xx, nothing was written to the controller, no
service logged a traceback, and every service still does its job.

And against the broker alone, seeded variants of what a logged-in client may try on the others: take
over a client id in use or kept for a farm or a service, announce packets far larger than the broker
takes, guess passwords, retain a command.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import random
import socket
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from itsdangerous import URLSafeTimedSerializer

from benchmarks.mqtt_load import subscribe_packet
from broker.core import DEFAULT_MAX_PACKET
from broker.mqtt_packets import remaining_length
from common.identities import Credentials, IdentityStore, Role
from contract.payloads import Ack, PayloadError, decode, decode_set_command
from farm_agent.control import CommandHandler, CommandRefused
from farm_agent.profile import load_profile
from tests.conftest import RunningBroker
from tests.farm_system import Agent, Simulator
from tests.helpers import MqttWatcher, ServiceProcess, free_port, wait_until, web_login
from tests.test_broker_limits import connected, publish, still_connected

FARM = "farm-h"
API_TOKEN = "hostile-test-token"
SEED = 20261125
TOTAL = 1000
PROFILE = load_profile()
WRITABLE = list(PROFILE.writable_by_name)

HOSTILE_STRINGS = [
    "../../etc/passwd", "..%2f..%2fetc%2fpasswd", "%2e%2e%2f%2e%2e%2f", "....//....//etc/passwd",
    "..\\..\\windows\\win.ini", "%252e%252e%252f", "farm-h/../farm-h", "farm-h%00.json", "%00", "%",
    "%zz", "' OR '1'='1", "farm-h'--", "1; DROP TABLE farms; --", "\"; SELECT * FROM sqlite_master; --",
    "farm-h' UNION SELECT * FROM farms --", "`id`", "$(id)", "{{7*7}}", "<script>alert(1)</script>",
    "\u202efarm", "ферма", "🐔", "A" * 5000, "-", "_", ".", "..", "farm-h ", " farm-h", "FARM-H",
    "farm-h\r\nX-Injected: 1", "+", "#", "farm/h", "null", "0", "-1", "1e999", "NaN",
]


@dataclass
class System:
    tmp_path: Path
    data_dir: Path
    store: IdentityStore
    admin: Credentials
    mqtt_port: int
    api_port: int
    web_port: int
    processes: dict[str, ServiceProcess] = field(default_factory=dict)
    simulator: Simulator | None = None
    agent: Agent | None = None
    statuses: list[tuple[str, str, int]] = field(default_factory=list)  # (service, request, status)

    def all_processes(self) -> dict[str, ServiceProcess]:
        assert self.simulator and self.simulator.process and self.agent and self.agent.process
        return {**self.processes, "simulator": self.simulator.process, "agent": self.agent.process}


@pytest.fixture
def system(tmp_path: Path, data_dir: Path) -> Iterator[System]:
    store = IdentityStore(data_dir)
    admin = store.add("admin", Role.ADMIN)
    farm = store.add(FARM, Role.FARM, owner="owner-h")
    web_service = store.add("mobile_web", Role.MOBILE_WEB)
    store.add("olga", Role.OPERATOR, password="operator-pass")
    running = System(tmp_path, data_dir, store, admin, free_port(), free_port(), free_port())
    try:
        running.processes["discovery"] = ServiceProcess(
            ["discovery", "--data-dir", str(data_dir), "--mqtt-host", "127.0.0.1", "--mqtt-port",
             str(running.mqtt_port), "--host", "127.0.0.1", "--port", str(running.api_port)],
            tmp_path / "discovery.log", env={"API_TOKEN": API_TOKEN},
        ).wait_port(running.api_port)
        running.simulator = Simulator(tmp_path).start()
        running.agent = Agent(tmp_path, tmp_path / "agent-data", FARM,
                              f"mqtt://{FARM}:{farm.password}@127.0.0.1:{running.mqtt_port}",
                              running.simulator.modbus_url).start()
        running.processes["web"] = ServiceProcess(
            ["mobile-web", "--data-dir", str(data_dir), "--host", "127.0.0.1", "--port", str(running.web_port)],
            tmp_path / "web.log",
            env={"MQTT_URL": f"mqtt://mobile_web:{web_service.password}@127.0.0.1:{running.mqtt_port}"},
        ).wait_port(running.web_port)
        wait_until(lambda: api(running, f"/api/farms/{FARM}")[1].get("state"), 20, what="the farm's state")
        yield running
    finally:
        if running.agent:
            running.agent.stop()
        if running.simulator:
            running.simulator.stop()
        for process in running.processes.values():
            process.stop()


def send_http(port: int, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None,
         timeout: float = 5) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def api(system: System, path: str, token: str | None = API_TOKEN) -> tuple[int, dict[str, object]]:
    status, body = send_http(system.api_port, "GET", path, {"Authorization": f"Bearer {token}"} if token else None)
    return status, json.loads(body)


# --- MQTT: payloads on set/… and state, through a client that sends whatever it is given -------------

def _field(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def connect_packet(credentials: Credentials, client_id: str) -> bytes:
    body = _field(b"MQTT") + b"\x04\xc2" + (30).to_bytes(2, "big") + _field(client_id.encode())
    body += _field(credentials.username.encode()) + _field(credentials.password.encode())
    return b"\x10" + remaining_length(len(body)) + body


def publish_packet(topic: bytes, payload: bytes, retain: bool = False, packet_id: int = 1) -> bytes:
    """A QoS 1 PUBLISH (the broker's PUBACKs are left unread: they are four bytes each)."""
    body = _field(topic) + packet_id.to_bytes(2, "big") + payload
    return bytes([0x32 | int(retain)]) + remaining_length(len(body)) + body


class RawMqtt:
    """An MQTT 3.1.1 connection that sends any bytes as a topic or payload (QoS 0), reconnecting when the
    broker hangs up on it, as it should on a protocol violation."""

    def __init__(self, port: int, credentials: Credentials) -> None:
        self.port, self.credentials = port, credentials
        self.sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        sock.sendall(connect_packet(self.credentials, f"hostile-{random.randrange(1 << 30)}"))
        connack = sock.recv(4)
        assert connack[:1] == b"\x20" and connack[3:4] == b"\x00", connack
        return sock

    def send(self, packet: bytes) -> None:
        for _ in range(2):
            try:
                self.sock = self.sock or self._connect()
                self.sock.sendall(packet)
                return
            except OSError:
                self.close()

    def wait_for_pubacks(self, count: int, timeout: float = 20) -> None:
        """Read the broker's PUBACKs: closing a socket with unread data resets it and loses what is in flight."""
        assert self.sock is not None
        self.sock.settimeout(timeout)
        received = b""
        while len(received) < 4 * count:
            chunk = self.sock.recv(65536)
            assert chunk, f"the broker hung up after {len(received) // 4} of {count} PUBACKs"
            received += chunk
        assert received == b"".join(b"\x40\x02" + i.to_bytes(2, "big") for i in range(1, count + 1))

    def closed_by_broker(self, timeout: float = 5) -> bool:
        assert self.sock is not None
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        return True

    def wait_for_answer(self, timeout: float = 0.2) -> None:
        """Wait for the PUBACK, or for the broker to hang up (it ignores a PUBLISH to a wildcard topic)."""
        if self.sock is not None:
            self.sock.settimeout(timeout)
            with contextlib.suppress(OSError):
                self.sock.recv(4)

    def close(self) -> None:
        if self.sock:
            self.sock.close()
            self.sock = None


def would_write(name: str, payload: bytes, retained: bool) -> bool:
    """Whether the agent would carry this command out: such a payload is no hostile input."""
    try:
        command = decode_set_command(payload)
    except PayloadError:
        return False
    spec = PROFILE.writable_by_name.get(name)
    if spec is None or retained or command.ts is not None:
        return False
    try:
        CommandHandler._raw_value(spec, command.value)
    except CommandRefused:
        return False
    return True


def hostile_payload(rng: random.Random) -> bytes:
    depth = rng.choice([50, 1000, 100_000])
    choices: list[Callable[[], bytes]] = [
        lambda: rng.randbytes(rng.randrange(0, 300)),
        lambda: b"[" * depth + b"]" * depth,
        lambda: b'{"value":' * depth + b"1" + b"}" * depth,
        lambda: b"9" * rng.choice([20, 400, 5000, 100_000]),
        lambda: rng.choice([b"1e400", b"-1e400", b"NaN", b"Infinity", b"-Infinity", b'{"value": NaN}',
                            b'{"value": 1e999}', b"1.7976931348623157e309", b"-0", b"0x1", b"1_000"]),
        lambda: json.dumps({"value": rng.choice(["1", True, None, [], {}, [1], {"value": 1}, "NaN"])}).encode(),
        lambda: rng.choice([b"true", b"false", b"null", b'"1"', b"[]", b"{}", b"", b" ", b"\x00", b"\xff\xfe"]),
        lambda: b'{"value": 1, "pad": "' + b"x" * (256 * 1024 + rng.randrange(1, 4096)) + b'"}',
        lambda: b" " * (256 * 1024) + b"1",
        lambda: json.dumps({"value": rng.choice([2, 0, -1, 10**18, 841, -735, 7, 1.5, 2**64])}).encode(),
        lambda: json.dumps({"value": 1, "ts": rng.choice(["yesterday", "2001-01-01T00:00:00Z", 5, "9" * 50])}).encode(),
        lambda: json.dumps({"value": 1, "id": rng.choice(["", "x" * 10_000, None, 5, ["a"]])}).encode(),
        lambda: json.dumps({"ts": "2026-11-25T00:00:00.000Z", "seq": -1, "values": {"temp_inside": "hot"},
                            "status": {"temp_inside": "melted"}}).encode(),
        lambda: json.dumps({"ts": "2026-11-25T00:00:00.000Z", "seq": 2**70, "values": {"x" * 1000: 1e308},
                            "status": {}}).encode(),
        lambda: json.dumps({"state": rng.choice(["online", "offline", "sideways", None]),
                            "ts": rng.choice([None, "garbage", 12])}).encode(),
    ]
    return rng.choice(choices)()


def mqtt_payload_inputs(rng: random.Random, count: int) -> Iterator[tuple[bytes, bytes, bool]]:
    kinds = ["set", "set", "state", "status", "meta", "heartbeat", "alarms", "ack", "events"]
    produced = 0
    while produced < count:
        kind = rng.choice(kinds)
        retain = rng.random() < 0.3
        payload = hostile_payload(rng)
        if kind == "set":
            name = rng.choice([*WRITABLE, *WRITABLE, "temp_inside", "nope", "RESET_ALARMS"])
            if would_write(name, payload, retain):
                continue
            topic = f"kub/farms/{FARM}/set/{name}"
        else:
            topic = f"kub/farms/{FARM}/{kind}"
        produced += 1
        yield topic.encode(), payload, retain


BAD_TOPICS = [
    b"", b"/", b"//", b"kub", b"kub/farms", b"kub/farms/", b"kub/farms//state", b"kub/farms/../state",
    b"kub/farms/farm-h/set/", b"kub/farms/farm-h/set/../reset_alarms", b"kub/farms/farm-h/set/reset_alarms/x",
    b"kub/farms/farm-h/set/reset_alarms\x00", b"kub/farms/farm-h\x00/set/reset_alarms",
    b"kub/farms/farm-h/set/RESET_ALARMS", b"kub/farms/farm-h/set/reset%5Falarms", b"kub/farms/FARM-H/set/reset_alarms",
    b"kub/farms/+/set/reset_alarms", b"kub/farms/#", b"#", b"+", b"kub/farms/farm-h/set/+",
    b"kub/farms/farm-h/set/#", b"$SYS/broker/uptime", b"kub/farms/\xff\xfe/set/reset_alarms",
    b"kub/farms/farm-h/set/reset_alarms\xc0\xaf", b"kub/farms/' OR 1=1 --/set/reset_alarms",
    b"kub/farms/farm-h/\xe2\x80\xaeset/reset_alarms", b"kub/farms/farm-h /set/reset_alarms",
    b"kub/farms/" + b"a" * 60_000 + b"/set/reset_alarms", b"kub/farms/farm-h/set/reset_alarms" + b"/" * 1000,
]


def bad_topic_inputs(rng: random.Random, count: int) -> Iterator[bytes]:
    """Each carries "1": were any of them taken for ``set/reset_alarms``, the controller would be written."""
    for index in range(count):
        if index < len(BAD_TOPICS):
            topic = BAD_TOPICS[index]
        else:
            topic = b"kub/farms/farm-h/set/" + rng.randbytes(rng.randrange(1, 40))
            if topic.endswith(b"/reset_alarms") or topic.endswith(b"/timezone_minutes"):
                continue
        yield publish_packet(topic, b"1")


# --- HTTP: the REST API, the agent's API and the mobile web -------------------------------------------

def hostile_text(rng: random.Random) -> str:
    if rng.random() < 0.6:
        return rng.choice(HOSTILE_STRINGS)
    alphabet = "abc-_./\\%'\";:?#&=+ ()<>{}[]|`$*!~\x00\x7f\u00e9\u4e2d"
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 60)))


def quoted(text: str, rng: random.Random) -> str:
    """The text percent-encoded, or sent as raw as an HTTP request line allows."""
    if rng.random() < 0.5:
        return urllib.parse.quote(text, safe="")
    return urllib.parse.quote(text, safe="/%'\";:=+()<>{}[]|`$*!~.-_?&#\\")


def rest_inputs(rng: random.Random, count: int) -> Iterator[tuple[str, dict[str, str]]]:
    for _ in range(count):
        value = quoted(hostile_text(rng), rng)
        path = rng.choice([
            f"/api/farms/{value}", f"/api/farms/{value}/commands", f"/api/farms/{FARM}/commands?limit={value}",
            f"/api/farms?owner={value}", f"/api/{value}", f"/{value}", f"/api/farms/{value}/history?name={value}",
            f"/api/farms/{FARM}?{value}={value}",
        ])
        token = rng.choice([API_TOKEN, API_TOKEN, API_TOKEN, "", "kmt_" + value, "Bearer", "x" * 8000])
        yield path, {"Authorization": f"Bearer {token}"} if token else {}


def web_inputs(rng: random.Random, count: int, secret: str) -> Iterator[tuple[str, str, dict[str, str], bytes | None]]:
    # Flask's signed-cookie session format, with the real key (as if it leaked) and with a wrong one
    signing = {"key_derivation": "hmac", "digest_method": hashlib.sha1}
    real_key = URLSafeTimedSerializer(secret, salt="cookie-session", signer_kwargs=signing)
    wrong_key = URLSafeTimedSerializer("not-the-key", salt="cookie-session", signer_kwargs=signing)
    cookies: list[Callable[[], str]] = [
        lambda: "",
        lambda: "session=" + hostile_text(rng).encode("ascii", "replace").decode(),
        lambda: "session=" + base64.urlsafe_b64encode(rng.randbytes(rng.randrange(1, 300))).decode(),
        lambda: "session=" + wrong_key.dumps({"username": "olga"}),
        lambda: "session=" + real_key.dumps({"username": rng.choice([FARM, "mobile_web", "ghost", "../olga"])}),
        lambda: "session=" + real_key.dumps({"username": rng.choice([["olga"], {"a": 1}, 5, None, True])}),
        lambda: "session=" + real_key.dumps({"username": "olga"})[:-3] + "AAA",
        lambda: "session=" + "A" * 3900,
        lambda: "lang=" + quoted(hostile_text(rng), rng) + "; session=..",
    ]
    for _ in range(count):
        value = quoted(hostile_text(rng), rng)
        method, path, body = rng.choice([
            ("GET", f"/farms/{value}", None), ("GET", f"/farms/{FARM}", None), ("GET", "/", None),
            ("GET", f"/lang/{value}", None), ("GET", f"/login?next={value}", None),
            ("GET", f"/events?farm={value}", None), ("GET", f"/static/{value}", None),
            ("POST", f"/farms/{value}/commands", b'{"name": "reset_alarms", "value": 1}'),
            ("POST", f"/farms/{FARM}/commands", b'{"name": "reset_alarms", "value": 1}'),
            ("POST", "/login", f"username={value}&password={value}&csrf_token={value}".encode()),
            ("POST", f"/login?next={value}", b"username=olga&password=operator-pass"),
            ("POST", "/logout", None),
        ])
        headers = {"Cookie": rng.choice(cookies)()}
        if method == "POST":
            headers["Content-Type"] = rng.choice(["application/json", "application/x-www-form-urlencoded",
                                                  "text/plain", "multipart/form-data; boundary=" + value[:70]])
            headers["X-CSRFToken"] = rng.choice(["", value, "a" * 200])
        if path.startswith("/events"):
            headers["Cookie"] = rng.choice(["", "session=" + wrong_key.dumps({"username": "olga"})])
            headers["Last-Event-ID"] = rng.choice(["9" * 5000, "-1", value])
        yield method, path, headers, body


def test_a_thousand_hostile_inputs_break_nothing(system: System) -> None:
    rng = random.Random(SEED)
    assert system.simulator is not None and system.agent is not None
    writes_before = len(system.simulator.stats()["writes"])
    seq_before = api(system, f"/api/farms/{FARM}")[1]["state"]["seq"]  # type: ignore[index]
    counts = {"mqtt payloads": 360, "bad topics": 100, "raw bytes": 40, "rest": 240, "agent http": 20, "web": 240}
    assert sum(counts.values()) == TOTAL
    started = time.monotonic()

    acks = MqttWatcher(system.mqtt_port, system.admin.username, system.admin.password, f"kub/farms/{FARM}/ack")
    wait_until(acks.subscribed.is_set, 5, what="the ack watcher")
    raw = RawMqtt(system.mqtt_port, system.admin)
    commands = routed = 0
    oversized: list[bytes] = []
    for topic, payload, retain in mqtt_payload_inputs(rng, counts["mqtt payloads"]):
        packet = publish_packet(topic, payload, retain, routed + 1)
        if len(packet) - 5 > DEFAULT_MAX_PACKET:  # the broker hangs up on it: sent on a connection of its own
            oversized.append(packet)
            continue
        raw.send(packet)
        routed += 1
        commands += b"/set/" in topic
    raw.wait_for_pubacks(routed)
    raw.close()
    for packet in oversized:
        raw.send(packet)
        assert raw.closed_by_broker(), f"a packet of {len(packet)} bytes was taken"
        raw.close()
    for packet in bad_topic_inputs(rng, counts["bad topics"]):
        # each on a connection of its own: the broker hangs up on most, and a packet it cannot decode
        # would make it read the rest of the stream out of step
        raw.send(packet)
        raw.wait_for_answer()
        raw.close()
    for _ in range(counts["raw bytes"]):  # not MQTT at all, or a CONNECT that lies about its length
        with socket.create_connection(("127.0.0.1", system.mqtt_port), timeout=5) as sock:
            sock.sendall(rng.choice([rng.randbytes(rng.randrange(1, 512)), b"\x10\xff\xff\xff\x7f" + rng.randbytes(64),
                                     b"GET / HTTP/1.1\r\n\r\n", b"\x10\x00"]))

    for path, headers in rest_inputs(rng, counts["rest"]):
        system.statuses.append(("discovery", path, send_http(system.api_port, "GET", path, headers)[0]))
    for _ in range(counts["agent http"]):
        path = rng.choice(["/health", "/api/data", "/api/"]) + quoted(hostile_text(rng), rng)
        system.statuses.append(("agent", path, send_http(system.agent.api_port, "GET", path)[0]))
    secret = (system.data_dir / "web_secret").read_text().strip()
    for method, path, headers, body in web_inputs(rng, counts["web"], secret):
        status = send_http(system.web_port, method, path, headers, body, timeout=10)[0]
        system.statuses.append(("web", f"{method} {path[:80]} {headers.get('Cookie', '')[:40]}", status))
    elapsed = time.monotonic() - started

    # every command reaches the agent and is refused (the forged acks sent above aside)
    wait_until(lambda: len(agent_acks(acks)) >= commands, 20, what=f"the agent refusing all {commands} commands")
    acks.close()
    answered = agent_acks(acks)
    assert [ack for ack in answered if ack.ok] == []
    server_errors = [entry for entry in system.statuses if entry[2] >= 500]
    assert server_errors == [], server_errors[:10]
    for name, process in system.all_processes().items():
        assert process.proc.poll() is None, f"{name} died:\n{process.output()[-3000:]}"
    # every service still does its job: a fresh reading travels simulator → agent → broker → discovery
    wait_until(lambda: api(system, f"/api/farms/{FARM}")[1]["state"]["seq"] > seq_before, 15,  # type: ignore[index]
               what="a new reading at the discovery node")
    assert api(system, "/health")[1]["broker"] == "connected"
    assert system.agent.health()["broker"] == "connected" and system.agent.health()["modbus"] == "ok"
    assert operator_can_log_in(system)
    assert len(system.simulator.stats()["writes"]) == writes_before, system.simulator.stats()["writes"]
    for name, process in system.all_processes().items():
        assert unexpected_tracebacks(process.output()) == [], f"{name} logged a traceback"
    answers = Counter(f"{service} {status}" for service, _, status in system.statuses)
    print(f"{TOTAL} hostile inputs in {elapsed:.1f} s; {commands} commands refused; {len(oversized)} packets "
          f"over the maximum packet size closed their connection; "
          f"HTTP answers: {dict(answers)}")


def agent_acks(watcher: MqttWatcher) -> list[Ack]:
    with watcher.lock:
        payloads = [payload for _, payload, _ in watcher.messages]
    found = []
    for payload in payloads:
        with contextlib.suppress(PayloadError):
            found.append(decode(Ack, payload))
    return found


def unexpected_tracebacks(log: str) -> list[str]:
    """The exceptions a log shows with a traceback, but for aiohttp's own refusals of malformed HTTP (it
    answers 400 and logs them at ERROR with the traceback)."""
    found = []
    for block in log.split("Traceback (most recent call last):")[1:]:
        last = next((line for line in block.splitlines()[1:] if line and not line.startswith(" ")), "")
        if not last.startswith("aiohttp.http_exceptions."):
            found.append(last)
    return found


def operator_can_log_in(system: System) -> bool:
    client = paho.Client(paho.CallbackAPIVersion.VERSION2)  # the broker still takes new clients
    client.username_pw_set(system.admin.username, system.admin.password)
    client.connect("127.0.0.1", system.mqtt_port)
    client.disconnect()
    return web_login(system.web_port, "olga", "operator-pass") is not None


# --- the broker alone: what one client may try on the others --------------------------------------------

def test_hostile_mqtt_clients_take_no_client_id_memory_or_password(broker: RunningBroker) -> None:
    rng = random.Random(SEED)
    farm = broker.add("farm-x", Role.FARM)
    intruders = [broker.add("viewer-x", Role.VIEWER), broker.add("operator-x", Role.OPERATOR, owner="o"),
                 broker.add("farm-y", Role.FARM), broker.admin]
    agent, code = connected(broker.port, "kubmesh-agent-farm-x", farm)
    assert code == b"\x00\x00"
    tried = Counter[str]()
    for _ in range(40):  # a client id in use, or kept for a farm or a service
        client_id = rng.choice(["kubmesh-agent-farm-x", "kubmesh-agent-farm-z", "kubmesh-discovery",
                                "kubmesh-mobile-web"])
        who = rng.choice(intruders)
        _, code = connected(broker.port, client_id, who)
        assert code == b"\x00\x05", f"{who.username} took the client id {client_id!r}"
        tried["client ids"] += 1
    assert still_connected(agent)
    viewer = intruders[0]
    for n in range(30):  # packets announcing more than the broker takes, of every kind a client sends
        client, code = connected(broker.port, f"big-{n}", viewer)
        assert code == b"\x00\x00"
        length = rng.choice([278_529, 1 << 20, 200 << 20, 268_435_455])
        header = rng.choice([0x30, 0x32, 0x34, 0x31, 0x82, 0xA2])
        client.send(bytes([header]) + remaining_length(length) + rng.randbytes(rng.randrange(0, 4096)))
        assert client.closed_by_broker(), f"a packet of type {header >> 4} announcing {length} bytes is buffered"
        tried["large packets"] += 1
    for n in range(20):  # retained commands, at every QoS, on every farm and value name
        topic = f"kub/farms/{rng.choice(['farm-x', 'farm-y', 'ghost'])}/set/{rng.choice([*WRITABLE, 'x', 'a/b'])}"
        client, _ = connected(broker.port, f"retainer-{n}", broker.admin)
        qos = rng.choice([0, 1, 2])
        client.send(publish(topic, b'{"value": 1}', qos=qos, packet_id=1, retain=True))
        if qos:
            client.next(4 if qos == 1 else 5)
        client.close()
        tried["retained commands"] += 1
    marker = "kub/farms/farm-x/state"
    agent.send(publish(marker, b"{}", qos=1, packet_id=7, retain=True))
    agent.next(4)
    later, _ = connected(broker.port, "later", broker.admin)
    later.send(subscribe_packet("kub/farms/+/#", qos=1))
    _, body = later.next(3)  # every retained message goes out at once, in the order they were kept
    assert body.startswith(len(marker).to_bytes(2, "big") + marker.encode()), f"a command was retained: {body[:60]!r}"
    wrong = [Credentials(rng.choice(["farm-x", "admin", "nobody"]), rng.randbytes(8).hex()) for _ in range(30)]
    for n, credentials in enumerate(wrong[:5]):  # guessed passwords: slowed after the first three
        with contextlib.suppress(OSError):
            connected(broker.port, f"guess-{n}", credentials, timeout=2)
        tried["passwords"] += 1
    refusals = [line for line in broker.process.output().splitlines() if "refused a login" in line]
    assert len(refusals) <= 2, refusals  # the first client id taken and the first guess: 45 refusals
    _, code = connected(broker.port, "farm-x-tool", farm, source="127.0.0.3")
    assert code == b"\x00\x00"
    assert "Traceback" not in broker.process.output()
    print(f"hostile MQTT clients: {dict(tried)}; all refused, the farm still connected")
