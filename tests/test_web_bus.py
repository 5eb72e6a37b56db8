"""The mobile web's edge to the bus: whatever a farm publishes, the pages keep rendering and the bridge keeps
receiving; when it is not receiving, /health says so; when the broker comes back, so does the bridge."""

from __future__ import annotations

import http.server
import json
import re
import subprocess
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.identities import IdentityStore, Role
from contract.payloads import PayloadError, Reading, decode, encode, utc_now
from contract.topics import FarmTopic
from farm_agent.profile import load_profile
from mobile_web.app import create_app
from mobile_web.bridge import SHOWN
from mobile_web.farms import EVENT_TEXTS
from mobile_web.settings import WebSettings
from tests.conftest import RunningBroker
from tests.helpers import ServiceProcess, wait_until, web_get, web_login
from tests.test_mobile_web import FARM, TOPICS, RecordingBridge, feed_farm, log_in

UNCONVERTIBLE = ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00.000001+00:01")
SHIPPED = load_profile()
OLD_FARM = "farm-old"


@pytest.mark.parametrize("ts", UNCONVERTIBLE)
def test_a_timestamp_that_utc_cannot_hold_is_a_validation_error(ts: str) -> None:
    with pytest.raises(PayloadError, match="cannot be converted to UTC"):
        decode(Reading, json.dumps({"ts": ts, "seq": 1, "values": {}}))


def test_timestamps_are_held_in_utc_and_written_with_a_z() -> None:
    reading = decode(Reading, b'{"ts": "2026-03-01T02:30:00+03:00", "seq": 1, "values": {}}')
    assert reading.ts == datetime(2026, 2, 28, 23, 30, tzinfo=UTC) and reading.ts.tzinfo is UTC
    assert json.loads(encode(reading))["ts"] == "2026-02-28T23:30:00.000Z"
    assert decode(Reading, b'{"ts": "2026-03-01T02:30:00", "seq": 1, "values": {}}').ts.tzinfo is UTC


# ---- every bus payload the web decodes, from hostile to nearly right -------------------------------------------
def iso(moment: datetime, minutes: int) -> str:
    return moment.replace(tzinfo=timezone(timedelta(minutes=minutes))).isoformat()


timestamps = st.one_of(
    st.builds(iso, st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59)),
              st.integers(-1439, 1439)),
    st.sampled_from(UNCONVERTIBLE), st.just(utc_now().isoformat()), st.text(max_size=30),
)
names = st.one_of(st.sampled_from([v.name for v in SHIPPED.values] + ["reset_alarms", "timezone_minutes"]),
                  st.text(max_size=20))
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=20))
jsonish = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                       max_leaves=8)
labels = st.one_of(st.none(), jsonish,
                   st.fixed_dictionaries({"en": st.text(max_size=20)}, optional={"ru": st.text(max_size=20)}))
numbers = st.one_of(st.integers(-(2**64), 2**64), st.floats(), st.none())
value_info = st.fixed_dictionaries({"name": names}, optional={
    "labels": labels, "unit": st.one_of(st.none(), st.text(max_size=8)), "decimals": st.integers(-2, 9),
    "kind": st.sampled_from(["number", "enum", "bitfield", "other"]),
    "options": st.dictionaries(st.integers(-5, 70).map(str), st.text(max_size=8), max_size=3),
    "bits": st.dictionaries(st.integers(-5, 70).map(str), st.text(max_size=8), max_size=3),
    "order": st.integers(-(2**70), 2**70)})
writable_info = st.fixed_dictionaries({"name": names}, optional={
    "labels": labels, "kind": st.sampled_from(["action", "setting", "other"]), "value": numbers, "min": numbers,
    "max": numbers, "step": numbers, "unit": st.one_of(st.none(), st.text(max_size=8))})
alarm_items = st.lists(st.fixed_dictionaries({"bit": st.integers(-3, 70), "label": st.text(max_size=20)},
                                             optional={"labels": labels}), max_size=4)
profiles = st.fixed_dictionaries({"name": st.text(max_size=10), "values": st.lists(names, max_size=4)}, optional={
    "version": st.integers(-1, 5), "writable": st.lists(names, max_size=3),
    "units": st.dictionaries(names, st.text(max_size=5), max_size=3),
    "value_info": st.lists(value_info, max_size=4), "writable_info": st.lists(writable_info, max_size=3),
    "alarm_groups": st.lists(st.fixed_dictionaries(
        {"name": st.text(max_size=8), "kind": st.sampled_from(["alarm", "warning"])},
        optional={"latched": st.booleans(), "labels": st.dictionaries(st.integers(-3, 70).map(str), labels,
                                                                      max_size=3)}), max_size=3)})
PAYLOADS: dict[FarmTopic, st.SearchStrategy[dict[str, Any]]] = {
    FarmTopic.STATUS: st.fixed_dictionaries({"state": st.sampled_from(["online", "offline", "x"]), "ts": timestamps},
                                            optional={"reason": jsonish}),
    FarmTopic.META: st.fixed_dictionaries({
        "farm_id": st.just(FARM), "name": st.text(max_size=20), "device": st.just({"model": "KUB-1063"}),
        "agent_version": st.just("1"), "poll_interval_s": numbers, "profile": profiles, "ts": timestamps,
    }, optional={"owner_id": st.one_of(st.none(), st.just("owner-a"), st.text(max_size=8))}),
    FarmTopic.HEARTBEAT: st.fixed_dictionaries({
        "ts": timestamps, "uptime_s": numbers, "polls_ok": numbers, "polls_failed": numbers,
        "modbus": st.sampled_from(["ok", "error"])}, optional={"backlog": numbers, "bytes_per_hour": numbers}),
    FarmTopic.STATE: st.fixed_dictionaries({
        "ts": timestamps, "seq": st.integers(-1, 2**64), "values": st.dictionaries(names, scalars, max_size=5)},
        optional={"status": st.dictionaries(names, st.sampled_from(["ok", "break", "pending", "bad"]), max_size=3),
                  "bits": jsonish}),
    FarmTopic.ALARMS: st.fixed_dictionaries({"ts": timestamps}, optional={
        "active": alarm_items, "latched": alarm_items, "warnings": alarm_items, "latched_warnings": alarm_items}),
    FarmTopic.EVENTS: st.fixed_dictionaries({
        "ts": timestamps, "kind": st.one_of(st.sampled_from(sorted(EVENT_TEXTS)), st.text(max_size=10)),
        "message": st.text(max_size=20)},
        optional={"detail": st.dictionaries(st.sampled_from(["bit", "label", "name", "from", "to", "value"]),
                                            jsonish, max_size=5)}),
    FarmTopic.ACK: st.fixed_dictionaries({"id": st.text(max_size=10), "name": names, "ok": st.booleans(),
                                          "ts": timestamps}, optional={"value": jsonish, "error": jsonish}),
}
assert set(PAYLOADS) == set(SHOWN)  # every kind of payload the web takes is generated


@st.composite
def messages(draw: st.DrawFn) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(sorted(PAYLOADS, key=lambda k: k.value)))
    topic = draw(st.one_of(st.just(TOPICS.farm(FARM, kind)), st.text(max_size=30),
                           st.just(f"kubmesh/farms/{FARM}/{kind.value}/extra")))
    payload = draw(st.one_of(PAYLOADS[kind].map(lambda d: json.dumps(d).encode()), st.binary(max_size=40),
                             jsonish.map(lambda d: json.dumps(d).encode())))
    return topic, payload


class HostileWeb:
    def __init__(self, data_dir: Path) -> None:
        IdentityStore(data_dir).add("olga", Role.OPERATOR, password="operator-pass")
        self.bridge = RecordingBridge()
        feed_farm(self.bridge)
        self.app: Flask = create_app(WebSettings(data_dir=data_dir, login_delay_max_s=0), self.bridge)
        self.client: FlaskClient = self.app.test_client()
        assert log_in(self.client, "olga", "operator-pass").status_code == 302
        self.events = self.bridge.hub.subscribe()


@pytest.fixture(scope="module")
def hostile_web(tmp_path_factory: pytest.TempPathFactory) -> HostileWeb:
    data_dir = tmp_path_factory.mktemp("hostile-web")
    return HostileWeb(data_dir)


def strict_json(text: str) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON a browser reads")
    return json.loads(text, parse_constant=refuse)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(st.lists(messages(), min_size=1, max_size=4))
def test_no_bus_payload_breaks_the_bridge_the_pages_or_the_streams(
    hostile_web: HostileWeb, batch: list[tuple[str, bytes]]
) -> None:
    if hostile_web.bridge.view(FARM) is None:  # removed by an earlier batch's cleared status: announce it again
        feed_farm(hostile_web.bridge)
    for topic, payload in batch:
        hostile_web.bridge.handle(topic, payload)
    assert hostile_web.bridge.handler_errors == 0  # every message was either shown or dropped as not fitting
    # a cleared status removes the farm (kubmesh farm remove): then its page is a 404, never an error
    shown = 200 if hostile_web.bridge.view(FARM) is not None else 404
    for path, language in (("/", "en"), (f"/farms/{FARM}", "en"), (f"/farms/{FARM}", "ru")):
        response = hostile_web.client.get(path, headers={"Accept-Language": language})
        assert response.status_code == (200 if path == "/" else shown), (path, response.get_data(as_text=True)[-2000:])
        assert "Project-Id-Version" not in response.get_data(as_text=True)  # gettext("") of an empty published word
    while not hostile_web.events.queue.empty():
        event = hostile_web.events.queue.get_nowait()
        assert event is not None
        strict_json(event.data)


def test_a_fault_while_handling_a_message_is_caught_and_counted(hostile_web: HostileWeb) -> None:
    bridge = RecordingBridge()

    def broken(*args: Any) -> None:
        raise RuntimeError("a view that cannot take it")

    bridge.hub.publish = broken  # type: ignore[method-assign]
    bridge.handle(TOPICS.state(FARM), encode(Reading(ts=utc_now(), seq=1, values={"temp_inside": 20.0})))
    bridge.handle(TOPICS.state(FARM), b"not json")
    assert bridge.handler_errors == 1 and bridge.dropped == 1


# ---- a real web process against a real broker ------------------------------------------------------------------


def publish(broker: RunningBroker, username: str, password: str, topic: str, payload: bytes) -> None:
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-u", username, "-P", password,
                    "-q", "1", "-t", topic, "-m", payload.decode()], check=True, timeout=10)


def health(port: int) -> tuple[int, dict[str, Any]]:
    status, body = web_get(port, "/health", "")
    return status, json.loads(body)


def page_shows(port: int, cookie: str, text: str) -> bool:
    status, body = web_get(port, f"/farms/{FARM}", cookie)
    return status == 200 and text in body


def test_a_farm_publishing_a_timestamp_utc_cannot_hold_does_not_freeze_the_web(
    broker: RunningBroker, web_process: tuple[ServiceProcess, int]
) -> None:
    process, port = web_process
    farm = broker.add(FARM, Role.FARM, owner=None)
    wait_until(lambda: health(port)[1]["broker"] == "connected", 10, what="the web connected")
    cookie = web_login(port, "vera", "viewer-pass")
    assert cookie is not None
    for topic, payload in [(TOPICS.status(FARM), b'{"state": "online", "ts": "%s"}' % utc_now().isoformat().encode()),
                           (TOPICS.state(FARM), encode(Reading(ts=utc_now(), seq=1, values={"temp_inside": 21.5})))]:
        publish(broker, farm.username, farm.password, topic, payload)
    wait_until(lambda: page_shows(port, cookie, "21.5"), 10, what="the first reading on the page")
    hostile = json.dumps({"ts": UNCONVERTIBLE[0], "seq": 2, "values": {"temp_inside": 99.9}}).encode()
    publish(broker, farm.username, farm.password, TOPICS.state(FARM), hostile)
    publish(broker, farm.username, farm.password, TOPICS.state(FARM),
            encode(Reading(ts=utc_now(), seq=3, values={"temp_inside": 23.7})))
    wait_until(lambda: page_shows(port, cookie, "23.7"), 10, what="the reading after the hostile one")
    status, body = health(port)
    assert status == 200 and body["status"] == "ok" and body["dropped"] >= 1 and body["handler_errors"] == 0
    assert "cannot be converted to UTC" in process.output()


def test_the_web_says_it_is_not_receiving_and_reconnects_when_the_broker_returns(
    broker: RunningBroker, web_process: tuple[ServiceProcess, int], tmp_path: Path
) -> None:
    port = web_process[1]
    farm = broker.add(FARM, Role.FARM)
    wait_until(lambda: health(port)[0] == 200 and health(port)[1]["status"] == "ok", 10, what="the web healthy")
    broker.process.stop()
    wait_until(lambda: health(port)[0] == 503, 15, what="/health degraded without a broker")
    body = health(port)[1]
    assert body["status"] == "degraded" and body["broker"] == "disconnected"
    broker.process = ServiceProcess(
        ["broker", "--data-dir", str(broker.data_dir), "--mqtt-host", "127.0.0.1", "--mqtt-port", str(broker.port)],
        tmp_path / "broker-again.log",
    ).wait_port(broker.port)
    wait_until(lambda: health(port)[1]["broker"] == "connected", 40, what="the web reconnected")
    cookie = web_login(port, "vera", "viewer-pass")
    assert cookie is not None
    publish(broker, farm.username, farm.password, TOPICS.status(FARM),
            b'{"state": "online", "ts": "%s"}' % utc_now().isoformat().encode())
    publish(broker, farm.username, farm.password, TOPICS.state(FARM),
            encode(Reading(ts=utc_now(), seq=5, values={"temp_inside": 19.9})))
    wait_until(lambda: page_shows(port, cookie, "19.9"), 10, what="a reading after the broker came back")
    assert health(port)[0] == 200


def test_health_is_degraded_after_a_silence(hostile_web: HostileWeb) -> None:
    bridge = RecordingBridge()
    bridge.connected, bridge.connected_at = True, 1000.0
    assert bridge.health(now=1000.0 + bridge.silence_s).receiving
    assert not bridge.health(now=1001.0 + bridge.silence_s).receiving
    bridge.handle(TOPICS.discovery_status(), b"online")
    assert bridge.health().receiving
    bridge.connected = False
    assert bridge.health().as_dict()["status"] == "degraded"


def test_a_farm_publishing_garbage_in_a_loop_is_logged_once_a_minute_and_counted_always(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bridge = RecordingBridge()
    with caplog.at_level("WARNING", logger="kubmesh.web.bridge"):
        for _ in range(100):
            bridge.handle(TOPICS.state(FARM), b"{not json")
        bridge.handle(TOPICS.state("farm-other"), b"{not json")
    assert bridge.dropped == 101
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["dropped a message"] * 2


@pytest.fixture(scope="module")
def operator_client(tmp_path_factory: pytest.TempPathFactory) -> tuple[FlaskClient, RecordingBridge, str]:
    data_dir = tmp_path_factory.mktemp("command-web")
    IdentityStore(data_dir).add("olga", Role.OPERATOR, password="operator-pass")
    bridge = RecordingBridge()
    feed_farm(bridge)
    feed_farm(bridge, OLD_FARM)  # then said to be on an older agent, whose profile (version 1) has no limits
    bridge.handle(TOPICS.meta(OLD_FARM), json.dumps({
        "farm_id": OLD_FARM, "name": "Old", "owner_id": "owner-a", "device": {"model": "KUB-1063"},
        "agent_version": "0.9", "poll_interval_s": 5, "ts": utc_now().isoformat(),
        "profile": {"name": "KUB-1063", "values": ["temp_inside"], "writable": ["reset_alarms", "timezone_minutes"]},
    }).encode())
    client = create_app(WebSettings(data_dir=data_dir, login_delay_max_s=0), bridge).test_client()
    assert log_in(client, "olga", "operator-pass").status_code == 302
    token = re.search(r'name="csrf-token" content="([^"]+)"', client.get(f"/farms/{FARM}").get_data(as_text=True))
    assert token
    return client, bridge, token.group(1)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from([FARM, OLD_FARM]), st.one_of(jsonish, st.fixed_dictionaries({"name": names, "value": st.one_of(
    scalars, st.integers(-(2**1100), 2**1100), st.sampled_from([1, 2, -720, 840, 841, 15.5, 1e308]))})))
def test_a_command_body_is_sent_only_within_the_published_limits_and_never_answers_500(
    operator_client: tuple[FlaskClient, RecordingBridge, str], farm_id: str, body: Any
) -> None:
    client, bridge, token = operator_client
    bridge.sent.clear()
    answer = client.post(f"/farms/{farm_id}/commands", data=json.dumps(body), content_type="application/json",
                         headers={"X-CSRFToken": token})
    assert answer.status_code in (202, 400), answer.get_data(as_text=True)
    limits = {w.name: w for w in SHIPPED.writable}
    if answer.status_code != 202:
        assert bridge.sent == [] and answer.get_json()["error"]
        return
    (_, name, sent), = bridge.sent
    spec = limits[name]
    if farm_id == OLD_FARM:  # no limits published: the agent's own check decides
        assert isinstance(sent["value"], int | float) and abs(sent["value"]) < 2**1024
    elif spec.kind == "action":
        assert sent["value"] == spec.value
    else:
        assert spec.min is not None and spec.max is not None and spec.min <= sent["value"] <= spec.max


def test_an_empty_word_a_farm_publishes_stays_empty(hostile_web: HostileWeb) -> None:
    summary = SHIPPED.summary()
    value_info = [info.model_copy(update={"options": {0: "", 1: "tunnel"}}) if info.kind == "enum" else info
                  for info in summary.value_info]
    meta = {"farm_id": FARM, "name": "Empty words", "owner_id": "owner-a", "device": {"model": "KUB-1063"},
            "agent_version": "1", "poll_interval_s": 5, "ts": utc_now().isoformat(),
            "profile": json.loads(encode(summary.model_copy(update={"value_info": value_info})))}
    hostile_web.bridge.handle(TOPICS.meta(FARM), json.dumps(meta).encode())
    hostile_web.bridge.handle(TOPICS.state(FARM), encode(Reading(ts=utc_now(), seq=2,
                                                                 values={"ventilation_scheme": 0})))
    page = hostile_web.client.get(f"/farms/{FARM}", headers={"Accept-Language": "ru"}).get_data(as_text=True)
    assert "Empty words" in page and "Project-Id-Version" not in page  # gettext("") answers the catalog's header


class Answering(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"farm": "x", "name": "y", "points": [{"ts": "%s"}]}'
                                  % UNCONVERTIBLE[0].encode(), b'{"farm": "x", "name": "y", "points": '
                                  b'[{"ts": "2026-01-01T00:00:00Z", "value": Infinity}]}', b"\xff\xfe"])
def test_a_history_answer_the_chart_cannot_use_is_a_502(hostile_web: HostileWeb, body: bytes) -> None:
    handler = type("Handler", (Answering,), {"body": body})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        feed_farm(hostile_web.bridge)
        hostile_web.app.config["DISCOVERY_URL"] = f"http://127.0.0.1:{server.server_address[1]}"
        answer = hostile_web.client.get(f"/farms/{FARM}/history?name=temp_inside")
        assert answer.status_code == 502 and answer.get_json()["error"]
    finally:
        hostile_web.app.config["DISCOVERY_URL"] = None
        server.shutdown()
        server.server_close()


def test_a_farm_publishing_another_profile_tells_its_open_pages_to_render_afresh() -> None:
    bridge = RecordingBridge()
    feed_farm(bridge)
    events = bridge.hub.subscribe(FARM)
    meta = bridge.farms[FARM].meta
    assert meta is not None
    bridge.handle(TOPICS.meta(FARM), encode(meta.model_copy(update={"ts": utc_now()})))  # the same profile
    renamed = meta.profile.model_copy(update={"values": [*meta.profile.values, "water_meter"]})
    bridge.handle(TOPICS.meta(FARM), encode(meta.model_copy(update={"profile": renamed})))
    kinds: list[str] = []
    while not events.queue.empty():
        event = events.queue.get_nowait()
        assert event is not None
        kinds.append(event.type)
    assert kinds == ["meta", "meta", "profile"]
