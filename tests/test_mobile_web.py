"""The mobile web: the Flask app through its test client, and a real process streaming real MQTT to HTTP."""

from __future__ import annotations

import csv
import html
import http.client
import http.cookiejar
import io
import json
import re
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import paho.mqtt.client as paho
import pytest
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.pofile import read_po
from flask import Flask
from flask.testing import FlaskClient

import mobile_web
from common.identities import IdentityStore, Role
from contract.payloads import (
    AlarmItem,
    Alarms,
    DeviceInfo,
    Event,
    Meta,
    Reading,
    Status,
    encode,
    utc_now,
)
from contract.topics import Topics
from farm_agent.profile import load_profile
from mobile_web.app import create_app
from mobile_web.bridge import FarmBridge
from mobile_web.i18n import best_language
from mobile_web.settings import WebSettings
from tests.conftest import RunningBroker
from tests.farm_system import send_a_week_of_history
from tests.helpers import ServiceProcess, free_port, wait_until, web_login
from tests.test_discovery import TOKEN, Discovery, start_discovery

FARM = "farm-001"
TOPICS = Topics()
SHIPPED_PROFILE = load_profile().summary()  # what an agent on the shipped profile publishes in meta


class RecordingBridge(FarmBridge):
    """The real bridge, fed by hand, with its outgoing commands recorded instead of sent."""

    def __init__(self) -> None:
        super().__init__(TOPICS)
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    def publish_command(self, farm_id: str, name: str, payload: bytes) -> bool:
        self.sent.append((farm_id, name, json.loads(payload)))
        return True


def farm_announcement(farm_id: str, owner: str, site: str | None = None) -> list[tuple[str, bytes]]:
    """A farm's retained ``status`` and ``meta``, as its agent publishes them on connecting."""
    now = utc_now()
    return [(TOPICS.status(farm_id), encode(Status(state="online", ts=now))), (TOPICS.meta(farm_id), encode(Meta(
        farm_id=farm_id, name=f"Ферма {farm_id}", owner_id=owner, site=site, device=DeviceInfo(model="KUB-1063"),
        agent_version="test", poll_interval_s=5, profile=SHIPPED_PROFILE, ts=now,
    )))]


def feed_farm(bridge: FarmBridge, farm_id: str = FARM, owner: str = "owner-a", site: str | None = None,
              **values: Any) -> None:
    now = utc_now()
    for topic, payload in farm_announcement(farm_id, owner, site):
        bridge.handle(topic, payload)
    readings = {"temp_inside": 21.5, "humidity": 61.0, "co2": 900} | values
    status = {name: ("ok" if value is not None else "break") for name, value in readings.items()}
    bridge.handle(TOPICS.state(farm_id), encode(Reading(ts=now, seq=1, values=readings, status=status)))


@pytest.fixture(scope="module")
def history_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Discovery]:
    """A real discovery node holding a week of one farm's readings, for the history proxy."""
    tmp_path = tmp_path_factory.mktemp("history-node")
    node = start_discovery(tmp_path, tmp_path / "data")
    try:
        wait_until(lambda: node.get("/health")[1]["broker"] == "connected", 10, what="discovery connected")
        admin = node.store.add("replay-admin", Role.ADMIN)
        announce = paho.Client(paho.CallbackAPIVersion.VERSION2)
        announce.username_pw_set(admin.username, admin.password)
        announce.connect("127.0.0.1", node.mqtt_port)
        announce.loop_start()
        for topic, payload in farm_announcement(FARM, "owner-a"):
            announce.publish(topic, payload, qos=1, retain=True).wait_for_publish(10)
        announce.disconnect()
        announce.loop_stop()
        wait_until(lambda: node.get(f"/api/farms/{FARM}")[0] == 200, 10, what="the farm registered")
        sent = send_a_week_of_history(node.mqtt_port, admin, FARM)
        wait_until(lambda: node.get(f"/api/farms/{FARM}")[1]["history"]["readings"] >= sent, 30,
                   what="the week of history stored by the discovery node")
        yield node
    finally:
        node.process.stop()


@pytest.fixture
def web(data_dir: Path, history_node: Discovery) -> Iterator[tuple[Flask, RecordingBridge, IdentityStore]]:
    store = IdentityStore(data_dir)
    store.add("olga", Role.OPERATOR, password="operator-pass")
    store.add("vera", Role.VIEWER, password="viewer-pass")
    store.add("other", Role.VIEWER, owner="owner-b", password="other-pass")
    bridge = RecordingBridge()
    settings = WebSettings(data_dir=data_dir, login_limit="5 per minute", login_delay_max_s=0.05,
                           discovery_url=f"http://127.0.0.1:{history_node.api_port}", discovery_token=TOKEN)
    app = create_app(settings, bridge, {"SSE_HEARTBEAT_S": 0.2})
    yield app, bridge, store


def csrf_token(client: FlaskClient, path: str = "/login") -> str:
    page = client.get(path).get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page) or re.search(
        r'name="csrf-token" content="([^"]+)"', page)
    assert match, page
    return match.group(1)


def log_in(client: FlaskClient, username: str, password: str) -> Any:
    return client.post("/login", data={"username": username, "password": password, "csrf_token": csrf_token(client)})


def test_pages_need_a_session(web: tuple[Flask, RecordingBridge, IdentityStore]) -> None:
    client = web[0].test_client()
    assert client.get("/").status_code == 302
    assert client.get(f"/farms/{FARM}").headers["Location"].startswith("/login")
    assert client.get("/events").status_code == 401
    assert client.get("/login").status_code == 200


def test_login_needs_csrf_and_right_password_and_is_throttled(
    web: tuple[Flask, RecordingBridge, IdentityStore],
) -> None:
    client = web[0].test_client()
    without_token = client.post("/login", data={"username": "vera", "password": "viewer-pass"})
    assert without_token.status_code == 400
    assert log_in(client, "vera", "wrong").status_code == 401
    for _ in range(4):
        log_in(client, "vera", "wrong")
    throttled = log_in(client, "vera", "viewer-pass")
    assert throttled.status_code == 429 and "Retry-After" in throttled.headers
    # the limit is per (client address, account): another account from the same address is not locked
    assert log_in(web[0].test_client(), "olga", "operator-pass").status_code == 302


def test_login_then_farm_list_and_page_show_values_and_sensor_status(
    web: tuple[Flask, RecordingBridge, IdentityStore],
) -> None:
    app, bridge, _ = web
    feed_farm(bridge, humidity=None, temp_inside=-20.0)
    client = app.test_client()
    assert log_in(client, "vera", "viewer-pass").status_code == 302
    listing = client.get("/", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert f"Ферма {FARM}" in listing and "online" in listing
    page = client.get(f"/farms/{FARM}", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert "-20.0" in page
    humidity = re.search(r'data-name="humidity" data-status="break">.*?</div>', page, re.S)
    assert humidity and "sensor break" in humidity.group(0) and "6553" not in humidity.group(0)
    assert client.get("/farms/no-such-farm").status_code == 404


def test_russian_from_accept_language_and_the_switch(web: tuple[Flask, RecordingBridge, IdentityStore]) -> None:
    app, bridge, _ = web
    feed_farm(bridge)
    client = app.test_client()
    log_in(client, "vera", "viewer-pass")
    page = client.get(f"/farms/{FARM}", headers={"Accept-Language": "ru-RU,ru;q=0.9"}).get_data(as_text=True)
    assert "Температура внутри" in page and "Аварии" in page and "на связи" in page
    client.get("/lang/en")
    english = client.get(f"/farms/{FARM}", headers={"Accept-Language": "ru"}).get_data(as_text=True)
    assert "Inside temperature" in english


def test_the_farm_list_groups_the_houses_of_a_site(web: tuple[Flask, RecordingBridge, IdentityStore]) -> None:
    app, bridge, _ = web
    feed_farm(bridge, "house-2", site="Агрофирма Север")
    feed_farm(bridge, "greenhouse")
    feed_farm(bridge, "house-1", site="Агрофирма Север")
    client = app.test_client()
    log_in(client, "vera", "viewer-pass")
    listing = client.get("/", headers={"Accept-Language": "en"}).get_data(as_text=True)
    groups = re.findall(r'<h2 class="site">([^<]+)</h2>\s*<ul class="farms"[^>]*>(.*?)</ul>', listing, re.S)
    assert [(site, re.findall(r'data-farm="([^"]+)"', cards)) for site, cards in groups] == [
        ("Агрофирма Север", ["house-1", "house-2"]), ("Other farms", ["greenhouse"])]


@pytest.mark.parametrize(("header", "expected"), [
    ("ru-RU,ru;q=0.9", "ru"), ("ru-RU", "ru"), ("ru", "ru"),
    ("ru-RU;q=0.9,en;q=0.1", "ru"),  # werkzeug's best_match said en: an exact match beat a higher q
    ("ru-RU,en-US;q=0.9,en;q=0.8", "ru"), ("en-US,en;q=0.9,ru;q=0.8", "en"), ("fr-FR,ru;q=0.5", "ru"),
    ("en;q=0,*", "ru"), ("*", "ru"), ("de", "en"), ("", "en"), ("ru;q=nonsense,en", "en"),
])
def test_accept_language_is_read_by_q_value_and_primary_subtag(header: str, expected: str) -> None:
    assert best_language(header, ("ru", "en"), default="en") == expected


def test_a_russian_phone_that_also_lists_english_opens_in_russian(
    web: tuple[Flask, RecordingBridge, IdentityStore],
) -> None:
    app, bridge, _ = web
    feed_farm(bridge)
    client = app.test_client()
    login = client.get("/login", headers={"Accept-Language": "ru-RU;q=0.9,en;q=0.1"}).get_data(as_text=True)
    assert 'lang="ru"' in login


def test_the_language_choice_follows_the_user_to_another_browser(
    web: tuple[Flask, RecordingBridge, IdentityStore],
) -> None:
    app, bridge, _ = web
    feed_farm(bridge)
    phone = app.test_client()
    log_in(phone, "vera", "viewer-pass")
    phone.get("/lang/ru", headers={"Accept-Language": "en"})
    laptop = app.test_client()  # no cookie of the choice, and a browser that asks for English
    log_in(laptop, "vera", "viewer-pass")
    page = laptop.get(f"/farms/{FARM}", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert "Температура внутри" in page
    laptop.get("/lang/en")
    assert "Inside temperature" in phone.get(f"/farms/{FARM}").get_data(as_text=True), "the newest choice wins"
    other = app.test_client()
    log_in(other, "olga", "operator-pass")  # another user keeps their own
    assert "Inside temperature" not in other.get(f"/farms/{FARM}", headers={"Accept-Language": "ru"}).get_data(
        as_text=True)


def test_the_streams_hear_of_farms_appearing_and_leaving(web: tuple[Flask, RecordingBridge, IdentityStore]) -> None:
    app, bridge, _ = web
    subscriber = bridge.hub.subscribe()
    feed_farm(bridge, "farm-new")
    bridge.handle(TOPICS.status("farm-new"), b"", retained=True)  # kubmesh farm remove clears it
    bridge.handle(TOPICS.state("farm-new"), b"", retained=True)
    events = []
    while not subscriber.queue.empty():
        event = subscriber.queue.get_nowait()
        assert event is not None
        events.append(event.type)
    assert events.count("farm_added") == 1 and events[events.index("status") + 1] == "farm_added"
    assert events[-1] == "farm_removed" and events.count("farm_removed") == 1
    assert bridge.view("farm-new") is None
    feed_farm(bridge, "farm-new")
    client = app.test_client()
    log_in(client, "vera", "viewer-pass")
    card = client.get("/farms/farm-new/card").get_data(as_text=True)
    assert card.strip().startswith("<li") and 'data-farm="farm-new"' in card and "Ферма farm-new" in card
    other = app.test_client()
    log_in(other, "other", "other-pass")
    assert other.get("/farms/farm-new/card").status_code == 404  # owner-b's list gets no owner-a card


def test_owner_scoped_viewer_sees_only_its_farms(web: tuple[Flask, RecordingBridge, IdentityStore]) -> None:
    app, bridge, _ = web
    feed_farm(bridge, FARM, owner="owner-a")
    feed_farm(bridge, "farm-b1", owner="owner-b")
    client = app.test_client()
    log_in(client, "other", "other-pass")
    listing = client.get("/").get_data(as_text=True)
    assert "farm-b1" in listing and FARM not in listing
    assert client.get(f"/farms/{FARM}").status_code == 404


def test_alarms_are_listed_and_put_first(web: tuple[Flask, RecordingBridge, IdentityStore]) -> None:
    app, bridge, _ = web
    feed_farm(bridge, "farm-a")
    feed_farm(bridge, "farm-z")
    alarm = AlarmItem(bit=4, label="alarm bit 4")
    bridge.handle(TOPICS.alarms("farm-z"), encode(Alarms(ts=utc_now(), active=[alarm], latched=[alarm])))
    client = app.test_client()
    log_in(client, "vera", "viewer-pass")
    listing = client.get("/").get_data(as_text=True)
    assert listing.index("farm-z") < listing.index("farm-a")
    assert "alarm bit 4" in client.get("/farms/farm-z").get_data(as_text=True)


def test_commands_only_for_operators_with_csrf(web: tuple[Flask, RecordingBridge, IdentityStore]) -> None:
    app, bridge, _ = web
    feed_farm(bridge)
    viewer = app.test_client()
    log_in(viewer, "vera", "viewer-pass")
    page = viewer.get(f"/farms/{FARM}").get_data(as_text=True)
    assert 'data-command="reset_alarms"' not in page
    token = csrf_token(viewer, f"/farms/{FARM}")
    forged = viewer.post(f"/farms/{FARM}/commands", json={"name": "reset_alarms", "value": 1},
                         headers={"X-CSRFToken": token})
    assert forged.status_code == 403

    operator = app.test_client()
    log_in(operator, "olga", "operator-pass")
    assert 'data-command="reset_alarms"' in operator.get(f"/farms/{FARM}").get_data(as_text=True)
    no_csrf = operator.post(f"/farms/{FARM}/commands", json={"name": "reset_alarms", "value": 1})
    assert no_csrf.status_code == 400
    token = csrf_token(operator, f"/farms/{FARM}")
    for bad in ({"name": "day_counter", "value": 1}, {"name": "reset_alarms", "value": "1"}, [1]):
        answer = operator.post(f"/farms/{FARM}/commands", json=bad, headers={"X-CSRFToken": token})
        assert answer.status_code == 400 and answer.get_json()["error"]
    assert bridge.sent == []
    sent = operator.post(f"/farms/{FARM}/commands", json={"name": "reset_alarms", "value": 1},
                         headers={"X-CSRFToken": token})
    assert sent.status_code == 202
    (farm_id, name, payload), = bridge.sent
    assert (farm_id, name, payload["value"], payload["id"]) == (FARM, "reset_alarms", 1, sent.get_json()["id"])


def test_a_late_answer_carrying_the_login_cookie_keeps_the_page_token_valid(
    web: tuple[Flask, RecordingBridge, IdentityStore]
) -> None:
    """Requests sent right after login (the service worker fetching the shell) answer with the login
    cookie again, possibly after a page has rendered its CSRF token: that token must still work."""
    app, bridge, _ = web
    feed_farm(bridge)
    operator = app.test_client()
    log_in(operator, "olga", "operator-pass")
    login_cookie = operator.get_cookie("session")
    assert login_cookie is not None
    token = csrf_token(operator, f"/farms/{FARM}")
    operator.set_cookie("session", login_cookie.value)  # the late answer lands last
    sent = operator.post(f"/farms/{FARM}/commands", json={"name": "reset_alarms", "value": 1},
                         headers={"X-CSRFToken": token})
    assert sent.status_code == 202, sent.get_data(as_text=True)

    operator.delete_cookie("session")
    expired = operator.post(f"/farms/{FARM}/commands", json={"name": "reset_alarms", "value": 1},
                            headers={"X-CSRFToken": token})
    assert expired.status_code in (302, 400)
    stale = app.test_client()
    log_in(stale, "olga", "operator-pass")
    refused = stale.post(f"/farms/{FARM}/commands", json={"name": "reset_alarms", "value": 1},
                         headers={"X-CSRFToken": "not-the-token"})
    assert refused.status_code == 400 and "reload" in refused.get_json()["error"]
    assert len(bridge.sent) == 1


def test_security_headers(web: tuple[Flask, RecordingBridge, IdentityStore]) -> None:
    response = web[0].test_client().get("/login")
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"




class FarmPublisher:
    """A farm's connection, kept open until the test ends (the embedded broker may drop the last
    messages of a client that disconnects right after publishing them)."""

    def __init__(self, broker: RunningBroker, farm: Any) -> None:
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"{FARM}-test")
        self.client.username_pw_set(farm.username, farm.password)
        self.client.connect("127.0.0.1", broker.port, keepalive=30)
        self.client.loop_start()

    def readings(self, readings: list[Reading]) -> None:
        for reading in readings:
            self.client.publish(TOPICS.state(FARM), encode(reading), qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_sse_stream_of_a_real_server_delivers_a_new_reading(
    broker: RunningBroker, web_process: tuple[ServiceProcess, int]
) -> None:
    process, port = web_process
    farm = broker.add(FARM, Role.FARM)
    cookie = web_login(port, "vera", "viewer-pass")
    assert cookie is not None
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", f"/events?farm={FARM}", headers={"Cookie": cookie})
    stream = connection.getresponse()
    assert stream.status == 200 and stream.headers["Content-Type"].startswith("text/event-stream")
    assert stream.readline() == b"retry: 3000\n"

    reading = Reading(ts=utc_now(), seq=42, values={"temp_inside": 23.4}, status={"temp_inside": "ok"})
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-u", farm.username,
                    "-P", farm.password, "-q", "1", "-t", TOPICS.state(FARM), "-m", encode(reading).decode()],
                   check=True, timeout=10)
    lines: list[bytes] = []
    wait_until(lambda: lines.append(stream.readline()) or b"event: state\n" in lines, 10, what="SSE event")
    data = json.loads(stream.readline().removeprefix(b"data: "))
    assert data["farm"] == FARM and data["seq"] == 42 and data["values"]["temp_inside"] == 23.4
    connection.close()
    assert process.stop() == 0


def test_a_browser_that_stops_reading_is_cut_off_while_the_others_get_everything(
    broker: RunningBroker, web_process: tuple[ServiceProcess, int]
) -> None:
    process, port = web_process
    farm = broker.add(FARM, Role.FARM)
    cookie = web_login(port, "vera", "viewer-pass")
    assert cookie is not None
    request = f"GET /events?farm={FARM} HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n\r\n".encode()
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # and never read: its buffers fill at once
    stalled.connect(("127.0.0.1", port))
    stalled.sendall(request)
    reader = socket.create_connection(("127.0.0.1", port), timeout=20)
    reader.sendall(request)
    received = b""
    while b"retry: 3000" not in received:
        received += reader.recv(65536)

    count = 400  # about 500 kB of events: far more than the stalled socket's buffers and its 64-event queue
    padding = {f"value_{i}": float(i) for i in range(50)}
    farm_link = FarmPublisher(broker, farm)
    publisher = threading.Thread(target=farm_link.readings, args=([
        Reading(ts=utc_now(), seq=seq, values={"temp_inside": 20.0, **padding}) for seq in range(1, count + 1)],))
    publisher.start()  # while this thread keeps reading, as a browser does

    def all_received() -> bool:
        nonlocal received
        received += reader.recv(65536)
        return f'"seq": {count},'.encode() in received

    wait_until(all_received, 20, interval=0, what="every reading on the stream that keeps reading")
    publisher.join(10)
    seqs = [int(n) for n in re.findall(rb'"seq": (\d+),', received)]
    assert seqs == list(range(1, count + 1))  # none lost, in order, though the other one stalled
    wait_until(lambda: "closed a stream that fell 64 events behind" in process.output(), 10,
               what="the stalled stream to be closed")
    reader.close()
    stalled.close()
    farm_link.close()


Web = tuple[Flask, RecordingBridge, IdentityStore]


class Streams:
    """``/events`` responses read chunk by chunk as the server yields them; closed last-opened first,
    as each holds its own request context."""

    def __init__(self) -> None:
        self.opened: list[Any] = []

    def open(self, client: FlaskClient, query: str = "", last_event_id: str | None = None) -> Iterator[str]:
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        response = client.get(f"/events{query}", headers=headers)
        assert response.status_code == 200 and response.mimetype == "text/event-stream"
        self.opened.append(response)
        return (chunk.decode() if isinstance(chunk, bytes) else chunk for chunk in response.response)

    def close(self) -> None:
        for response in reversed(self.opened):
            response.close()


@pytest.fixture
def streams() -> Iterator[Streams]:
    opened = Streams()
    yield opened
    opened.close()


def events_of(chunk: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in chunk.strip().splitlines() if not line.startswith(":"))


def test_stream_sends_heartbeat_comments_while_idle(web: Web, streams: Streams) -> None:
    app = web[0]
    client = app.test_client()
    log_in(client, "vera", "viewer-pass")
    stream = streams.open(client)
    assert next(stream) == "retry: 3000\n\n"
    assert next(stream) == ": ping\n\n"  # SSE_HEARTBEAT_S is 0.2 s in these tests


def test_reconnect_with_last_event_id_gets_what_was_missed(web: Web, streams: Streams) -> None:
    app, bridge, _ = web
    feed_farm(bridge)
    client = app.test_client()
    log_in(client, "vera", "viewer-pass")
    stream = streams.open(client, f"?farm={FARM}")
    next(stream)
    bridge.handle(TOPICS.state(FARM), encode(Reading(ts=utc_now(), seq=2, values={"temp_inside": 20.0})))
    seen = events_of(next(stream))
    assert seen["event"] == "state"
    for seq in (3, 4):  # published while the browser was away
        bridge.handle(TOPICS.state(FARM), encode(Reading(ts=utc_now(), seq=seq, values={"temp_inside": 20.0})))
    again = streams.open(client, f"?farm={FARM}", last_event_id=seen["id"])
    next(again)
    replayed = [json.loads(events_of(next(again))["data"])["seq"] for _ in range(2)]
    assert replayed == [3, 4]
    # an id from before a restart (another epoch), or garbage: the page is told to render afresh
    for stale_id in ("0-1", "not-an-id"):
        resync = streams.open(client, f"?farm={FARM}", last_event_id=stale_id)
        next(resync)
        assert events_of(next(resync))["event"] == "resync"


@pytest.mark.parametrize("path", [f"/farms/{FARM}", "/", "/alerts"])
def test_what_changes_between_the_page_and_its_stream_is_not_missed(web: Web, streams: Streams, path: str) -> None:
    app, bridge, _ = web
    feed_farm(bridge)
    client = app.test_client()
    log_in(client, "vera", "viewer-pass")
    page = client.get(path).get_data(as_text=True)
    stream_url = html.unescape(re.search(r'data-stream="([^"]+)"', page).group(1))  # type: ignore[union-attr]
    # an alarm latched after the page was rendered, before the browser opened the page's stream
    bridge.handle(TOPICS.alarms(FARM), encode(Alarms(ts=utc_now(), latched=[AlarmItem(bit=2, label="alarm bit 2")])))
    stream = streams.open(client, stream_url.removeprefix("/events"))
    next(stream)
    first = events_of(next(stream))
    assert first["event"] == "alarms" and json.loads(first["data"])["latched"][0]["bit"] == 2


def test_a_stalled_stream_is_closed_and_never_holds_up_the_others(web: Web, streams: Streams) -> None:
    app, bridge, _ = web
    feed_farm(bridge)
    hub = bridge.hub
    fast_client, slow_client = app.test_client(), app.test_client()
    log_in(fast_client, "vera", "viewer-pass")
    log_in(slow_client, "olga", "operator-pass")
    fast, slow = streams.open(fast_client), streams.open(slow_client)
    next(fast), next(slow)  # both subscribed; from now on the slow one never reads
    assert hub.subscriber_count == 2
    received: list[int] = []
    for seq in range(10, 10 + 3 * hub.queue_size):
        bridge.handle(TOPICS.state(FARM), encode(Reading(ts=utc_now(), seq=seq, values={"temp_inside": 20.0})))
        received.append(json.loads(events_of(next(fast))["data"])["seq"])  # the fast one keeps up
    assert received == list(range(10, 10 + 3 * hub.queue_size))
    assert hub.subscriber_count == 1 and hub.closed_slow == 1  # the slow one was dropped once it filled up
    with pytest.raises(StopIteration):  # and its stream ends, so the browser reconnects with Last-Event-ID
        next(slow)


def test_history_proxy_asks_discovery_with_its_token(web: Web) -> None:
    app, bridge, _ = web
    feed_farm(bridge)
    client = app.test_client()
    log_in(client, "vera", "viewer-pass")
    answer = client.get(f"/farms/{FARM}/history?name=temp_inside&range=7d")
    assert answer.status_code == 200
    body = answer.get_json()
    assert (body["farm"], body["name"], body["range"], body["unit"]) == (FARM, "temp_inside", "7d", "°C")
    # a week of readings every 15 min, asked for in 2 h buckets: 84 of them, give or take the ends
    assert 84 <= len(body["points"]) <= 86 and {"ts", "value", "min", "max"} <= set(body["points"][0])
    assert all(21 <= p["min"] <= p["value"] <= p["max"] <= 27 for p in body["points"])
    span = datetime.fromisoformat(body["points"][-1]["ts"]) - datetime.fromisoformat(body["points"][0]["ts"])
    assert timedelta(days=6, hours=20) <= span <= timedelta(days=7)
    day = client.get(f"/farms/{FARM}/history?name=humidity").get_json()  # 24 h by default
    assert 94 <= len(day["points"]) <= 96 and all(50 <= p["value"] <= 70 for p in day["points"])

    app.config["DISCOVERY_TOKEN"] = "not-the-token"  # discovery refuses it: the page hears "not available"
    refused = client.get(f"/farms/{FARM}/history?name=temp_inside")
    assert refused.status_code == 502 and refused.get_json()["error"]


@pytest.mark.parametrize(("query", "status"), [
    ("name=digital_outputs_1", 400),  # a bit field: nothing to draw
    ("name=ventilation_scheme", 400),  # an enum
    ("name=no_such_value", 400),
    ("name=temp_inside&range=1y", 400),
    ("", 400),
])
def test_history_proxy_refuses_bad_requests(web: Web, query: str, status: int) -> None:
    app, bridge, _ = web
    feed_farm(bridge)
    client = app.test_client()
    log_in(client, "vera", "viewer-pass")
    answer = client.get(f"/farms/{FARM}/history?{query}")
    assert answer.status_code == status and answer.get_json()["error"]


@pytest.mark.parametrize(("language", "delimiter", "decimal"), [("ru", ";", ","), ("en", ",", ".")])
def test_csv_export_of_chosen_values_in_the_users_time_zone(web: Web, language: str, delimiter: str,
                                                            decimal: str) -> None:
    app, bridge, _ = web
    feed_farm(bridge)
    client = app.test_client()
    log_in(client, "vera", "viewer-pass")
    client.get(f"/lang/{language}")
    zone = ZoneInfo("Asia/Novosibirsk")
    today = utc_now().astimezone(zone).date()
    answer = client.get(f"/farms/{FARM}/history.csv?name=temp_inside&name=humidity&from={today - timedelta(days=1)}"
                        f"&to={today}&tz=Asia/Novosibirsk")
    assert answer.status_code == 200 and answer.mimetype == "text/csv", answer.get_data(as_text=True)
    assert f'filename="{FARM}-{today - timedelta(days=1)}-{today}.csv"' in answer.headers["Content-Disposition"]
    body = answer.get_data()
    assert body.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig")), delimiter=delimiter))
    if language == "ru":
        assert rows[0] == ["время (Asia/Novosibirsk)", "Температура внутри, °C", "Влажность, %"]
    else:
        assert rows[0] == ["time (Asia/Novosibirsk)", "Inside temperature, °C", "Humidity, %"]
    # a reading every 15 min since yesterday's local midnight, up to now
    start = datetime.combine(today - timedelta(days=1), datetime.min.time(), zone)
    expected = (utc_now() - start) / timedelta(minutes=15)
    assert expected - 2 <= len(rows) - 1 <= expected + 1
    first = datetime.strptime(rows[1][0], "%Y-%m-%d %H:%M:%S").replace(tzinfo=zone)
    assert start <= first < start + timedelta(minutes=15), "times are local to the user's zone"
    temperature = float(rows[1][1].replace(decimal, "."))
    assert 21 <= temperature <= 27 and (decimal in rows[1][1]) and len(rows[1][1].split(decimal)[1]) == 1
    for bad in ("name=temp_inside&from=2026-01-02&to=2026-01-01&tz=UTC", "name=temp_inside&from=x&to=y&tz=UTC",
                f"name=temp_inside&from={today}&to={today}&tz=Mars/Olympus", f"from={today}&to={today}&tz=UTC",
                f"name=digital_outputs_1&from={today}&to={today}&tz=UTC",
                f"name=temp_inside&from={today - timedelta(days=40)}&to={today}&tz=UTC"):
        refused = client.get(f"/farms/{FARM}/history.csv?{bad}")
        assert refused.status_code == 400 and refused.get_json()["error"], bad
    assert app.test_client().get(f"/farms/{FARM}/history.csv?name=temp_inside").status_code == 302


def test_the_farm_page_offers_the_export_of_its_chartable_values(web: Web) -> None:
    app, bridge, _ = web
    feed_farm(bridge)
    client = app.test_client()
    log_in(client, "vera", "viewer-pass")
    page = client.get(f"/farms/{FARM}", headers={"Accept-Language": "en"}).get_data(as_text=True)
    form = re.search(r'<section class="card export".*?</section>', page, re.S)
    assert form and f'action="/farms/{FARM}/history.csv"' in form.group(0)
    names = re.findall(r'name="name" value="(\w+)"', form.group(0))
    assert names[:3] == ["temp_inside", "temp_target", "humidity"] and "digital_outputs_1" not in names


def test_history_proxy_when_discovery_is_unreachable_or_unset(web: Web, data_dir: Path) -> None:
    app, bridge, _ = web
    feed_farm(bridge)
    app.config["DISCOVERY_URL"] = f"http://127.0.0.1:{free_port()}"
    client = app.test_client()
    log_in(client, "vera", "viewer-pass")
    assert client.get(f"/farms/{FARM}/history?name=temp_inside").status_code == 502
    app.config["DISCOVERY_URL"] = None
    assert client.get(f"/farms/{FARM}/history?name=temp_inside").status_code == 503
    other = app.test_client()
    log_in(other, "other", "other-pass")  # owner-b does not see owner-a's farm, nor its history
    assert other.get(f"/farms/{FARM}/history?name=temp_inside").status_code == 404
    assert app.test_client().get(f"/farms/{FARM}/history?name=temp_inside").status_code == 302


def test_pwa_manifest_icons_service_worker_and_offline_page_need_no_session(web: Web) -> None:
    client = web[0].test_client()
    manifest = client.get("/manifest.webmanifest")
    assert manifest.status_code == 200 and manifest.mimetype == "application/manifest+json"
    body = manifest.get_json()
    assert body["start_url"] == "/" and body["display"] == "standalone"
    for icon in body["icons"]:
        data = client.get(icon["src"]).data
        if icon["type"] == "image/png":
            width, height = struct.unpack(">II", data[16:24])
            assert data[:8] == b"\x89PNG\r\n\x1a\n" and f"{width}x{height}" == icon["sizes"]
    worker = client.get("/sw.js")
    assert worker.status_code == 200 and worker.mimetype == "text/javascript"
    assert worker.headers["Cache-Control"] == "no-cache"
    shell = json.loads(re.search(r"const SHELL = (\[.*?\]);", worker.get_data(as_text=True)).group(1))  # type: ignore[union-attr]
    assert "/offline" in shell and "/static/app.js" in shell
    assert all(client.get(path).status_code == 200 for path in shell)
    offline = client.get("/offline", headers={"Accept-Language": "ru"}).get_data(as_text=True)
    assert "Нет сети" in offline and "csrf" not in offline


def test_farm_page_marks_old_values_and_offline_farms_stale(web: Web) -> None:
    app, bridge, _ = web
    feed_farm(bridge)
    client = app.test_client()
    log_in(client, "vera", "viewer-pass")
    page = client.get(f"/farms/{FARM}").get_data(as_text=True)
    assert not re.search(r'<main id="farm"[^>]*class="stale"', page)
    view = bridge.view(FARM)
    assert view is not None and view.state_received is not None and view.status_received is not None
    view.state_received -= 11  # two poll intervals (5 s) and a second ago
    view.status_received -= 11
    assert re.search(r'<main id="farm"[^>]*class="stale"', client.get(f"/farms/{FARM}").get_data(as_text=True))
    feed_farm(bridge)
    bridge.handle(TOPICS.status(FARM), encode(Status(state="offline", ts=utc_now())))
    assert re.search(r'<main id="farm"[^>]*class="stale"', client.get(f"/farms/{FARM}").get_data(as_text=True))
    listing = client.get("/", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert re.search(r'class="card farm stale"', listing) and "offline" in listing


def test_events_are_said_in_the_page_language(web: Web) -> None:
    app, bridge, _ = web
    feed_farm(bridge)
    bridge.handle(TOPICS.events(FARM), encode(Event(ts=utc_now(), kind="alarm_raised", message="alarm raised: x",
                                                    detail={"bit": 3, "label": "alarm bit 3"})))
    bridge.handle(TOPICS.events(FARM), encode(Event(ts=utc_now(), kind="sensor_status", message="humidity: ok → break",
                                                    detail={"name": "humidity", "from": "ok", "to": "break"})))
    client = app.test_client()
    log_in(client, "vera", "viewer-pass")
    page = client.get(f"/farms/{FARM}", headers={"Accept-Language": "ru"}).get_data(as_text=True)
    assert "Авария: авария, бит 3" in page and "Влажность: норма → обрыв датчика" in page


def test_every_interface_string_has_a_russian_translation() -> None:
    """Extracts the strings from the code and templates as ``pybabel extract`` does; each must be in ru."""
    package = Path(mobile_web.__file__).parent
    method_map = [("**.py", "python"), ("**/templates/**.html", "jinja2")]
    keywords = {**DEFAULT_KEYWORDS, "lazy_gettext": None}
    found = {message for _, _, message, *_ in extract_from_dir(package, method_map, keywords=keywords)}
    with (package / "translations/ru/LC_MESSAGES/messages.po").open("rb") as source:
        catalog = read_po(source, locale="ru")
    untranslated = sorted(m for m in found if isinstance(m, str) and not (catalog.get(m) and catalog[m].string))
    assert untranslated == []
    assert len(found) > 60
