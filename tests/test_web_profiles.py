"""The web shows each farm from the profile its agent publishes: a farm whose agent runs a custom profile
(the shipped KUB-1063 file with one value renamed, one added and other limits on a control) shows exactly
its own values, labels and controls, beside a farm on the shipped profile, with the same web code."""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from playwright.sync_api import expect, sync_playwright

from common.identities import Credentials, Role
from contract.payloads import AlarmItem, Alarms, Labels, ProfileSummary, Reading, encode, utc_now
from contract.topics import FarmTopic, Topics
from farm_agent.profile import Profile, load_profile, parse_profile
from mobile_web.farm_profile import main_value
from tests.conftest import RunningBroker
from tests.farm_system import Simulator
from tests.helpers import REPO, ServiceProcess, free_port, wait_until, web_get, web_login
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS

CUSTOM_FARM = "farm-custom"
SHIPPED_FARM = "farm-shipped"
SHIPPED_TEXT = (REPO / "farm_agent" / "profiles" / "kub1063.yaml").read_text(encoding="utf-8")


def custom_profile_text() -> str:
    """The shipped profile with temp_inside renamed, a value added first, the time zone limited to ±10 h,
    and one alarm bit named."""
    text = SHIPPED_TEXT.replace(
        "name: temp_inside, address: 0x00D5", "name: air_temp, address: 0x00D5"
    ).replace(
        "label: {en: Inside temperature, ru: Температура внутри}",
        "label: {en: Air temperature, ru: Температура воздуха}",
    ).replace(
        "  - {name: digital_outputs_1,",
        "  - {name: inlet_position, address: 0x008A, type: u16, unit: \"%\", sentinels: false, priority: 0,\n"
        "     label: {en: Air inlet position, ru: Положение приточных клапанов}}\n"
        "  - {name: digital_outputs_1,",
    ).replace(
        "min: -720, max: 840, step: 15,", "min: -600, max: 600, step: 30,"
    ).replace(
        "{name: active_alarms, address: 0x00C0, kind: alarm, latched: false}",
        "{name: active_alarms, address: 0x00C0, kind: alarm, latched: false,\n"
        "     labels: {3: {en: Inlet jammed, ru: Заклинило клапан}}}",
    )
    for edit in ("air_temp", "inlet_position", "max: 600", "Inlet jammed"):
        assert edit in text, edit  # the shipped file changed under the test: adapt the edits
    return text


@dataclass
class Farms:
    web_port: int
    custom: Profile
    cookie: str
    broker: RunningBroker
    simulator: Simulator
    shipped_farm: Credentials


def announce_shipped_farm(broker: RunningBroker, farm: Credentials, profile: ProfileSummary) -> None:
    """A farm on the shipped profile, published as its agent would (an agent of its own is not needed)."""
    now = utc_now()
    meta = {"farm_id": SHIPPED_FARM, "name": "Shipped", "device": {"model": "KUB-1063"}, "agent_version": "test",
            "poll_interval_s": 5, "profile": profile.model_dump(mode="json"), "ts": now.isoformat()}
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"{SHIPPED_FARM}-test")
    client.username_pw_set(farm.username, farm.password)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        for kind, payload in [
            (FarmTopic.STATUS, json.dumps({"state": "online", "ts": now.isoformat()}).encode()),
            (FarmTopic.META, json.dumps(meta).encode()),
            (FarmTopic.STATE, encode(Reading(ts=now, seq=1, values={"temp_inside": 22.5, "humidity": 55.0}))),
        ]:  # retained and acknowledged: the web, connecting later, gets them
            client.publish(Topics().farm(SHIPPED_FARM, kind), payload, qos=1, retain=True).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.fixture
def farms(broker: RunningBroker, tmp_path: Path, data_dir: Path) -> Iterator[Farms]:
    profile_file = tmp_path / "custom-kub.yaml"
    profile_file.write_text(custom_profile_text(), encoding="utf-8")
    custom = parse_profile(profile_file.read_text(encoding="utf-8"), str(profile_file))
    simulator = Simulator(tmp_path, extra_args=["--profile", str(profile_file)]).start()
    farm = broker.add(CUSTOM_FARM, Role.FARM)
    agent_port = free_port()
    agent = ServiceProcess(
        ["farm-agent", "--data-dir", str(tmp_path / "agent-data"), "--farm-id", CUSTOM_FARM,
         "--modbus-url", simulator.modbus_url, "--poll-interval", "0.5", "--profile", str(profile_file),
         "--host", "127.0.0.1", "--port", str(agent_port)],
        tmp_path / "agent.log", env={"MQTT_URL": broker.url(farm), "MAX_INTERVAL": "0"},
    ).wait_port(agent_port)
    shipped_farm = broker.add(SHIPPED_FARM, Role.FARM)
    announce_shipped_farm(broker, shipped_farm, load_profile().summary())
    service = broker.add("mobile_web", Role.MOBILE_WEB)
    broker.store.add("olga", Role.OPERATOR, password="operator-pass")
    web_port = free_port()
    web = ServiceProcess(
        ["mobile-web", "--data-dir", str(data_dir), "--host", "127.0.0.1", "--port", str(web_port)],
        tmp_path / "web.log", env={"MQTT_URL": broker.url(service)},
    ).wait_port(web_port)
    try:
        cookie = web_login(web_port, "olga", "operator-pass")
        assert cookie is not None
        yield Farms(web_port, custom, cookie, broker, simulator, shipped_farm)
    finally:
        web.stop()
        agent.stop()
        simulator.stop()


def page(farms: Farms, path: str, language: str = "en") -> str:
    status, body = web_get(farms.web_port, path, f"{farms.cookie}; lang={language}")
    assert status == 200, body
    return body


def shown_values(body: str) -> list[str]:
    return re.findall(r'<div class="card value" data-name="([^"]+)"', body)


def controls(body: str) -> dict[str, str]:
    return dict(re.findall(r'<form class="command" data-command="([^"]+)".*?<label>([^<\n]+)', body, re.S))


def send(farms: Farms, farm_id: str, name: str, value: float) -> tuple[int, Any]:
    body = page(farms, f"/farms/{farm_id}")
    token = re.search(r'name="csrf-token" content="([^"]+)"', body)
    assert token
    connection = http.client.HTTPConnection("127.0.0.1", farms.web_port, timeout=5)
    try:
        connection.request("POST", f"/farms/{farm_id}/commands", json.dumps({"name": name, "value": value}),
                           {"Cookie": farms.cookie, "Content-Type": "application/json", "X-CSRFToken": token.group(1)})
        answer = connection.getresponse()
        return answer.status, json.loads(answer.read())
    finally:
        connection.close()


def test_a_farm_on_a_custom_profile_shows_exactly_its_own_values_labels_and_controls(farms: Farms) -> None:
    custom_page = wait_until(lambda: (body := page(farms, f"/farms/{CUSTOM_FARM}")) and 'data-status="ok"' in body
                             and body, 20, what="the custom farm's first reading on its page")
    own = [spec.name for spec in farms.custom.display_order() if spec.type != "bits16"]
    assert shown_values(custom_page) == own  # its values, in its order: the added one first
    assert own[0] == "inlet_position" and "temp_inside" not in own and "air_temp" in own
    assert "Air temperature" in custom_page and "Air inlet position" in custom_page
    assert "Inside temperature" not in custom_page
    assert controls(custom_page) == {w.name: w.label.en for w in farms.custom.writable if w.label}
    assert 'min="-600.0" max="600.0" step="30.0"' in custom_page

    russian = page(farms, f"/farms/{CUSTOM_FARM}", "ru")
    assert "Температура воздуха" in russian and "Положение приточных клапанов" in russian
    assert "Температура внутри" not in russian

    shipped_page = page(farms, f"/farms/{SHIPPED_FARM}")
    shipped = load_profile()
    assert shown_values(shipped_page) == [s.name for s in shipped.display_order() if s.type != "bits16"]
    assert "Inside temperature" in shipped_page and "Air temperature" not in shipped_page
    assert 'max="840.0"' in shipped_page

    listing = page(farms, "/")  # each farm summed up by the first number of its own profile
    assert re.search(rf'data-farm="{CUSTOM_FARM}".*?data-value="inlet_position"', listing, re.S)
    assert re.search(rf'data-farm="{SHIPPED_FARM}".*?data-value="temp_inside"', listing, re.S)


def test_the_command_check_uses_each_farms_published_limits(farms: Farms) -> None:
    wait_until(lambda: f"/farms/{CUSTOM_FARM}" in page(farms, "/") and f"/farms/{SHIPPED_FARM}" in page(farms, "/"),
               20, what="both farms listed")
    status, answer = send(farms, CUSTOM_FARM, "timezone_minutes", 720)
    assert status == 400 and "600" in answer["error"]  # within the shipped limit, not within this farm's
    assert send(farms, SHIPPED_FARM, "timezone_minutes", 720)[0] == 202
    assert send(farms, CUSTOM_FARM, "temp_inside", 1)[0] == 400  # not a writable of this farm
    status, answer = send(farms, CUSTOM_FARM, "timezone_minutes", 180)
    assert status == 202
    wait_until(lambda: any(w["address"] == 0x003F and w["value"] == 180 for w in farms.simulator.stats()["writes"]),
               10, what="the custom farm's agent to write the time zone")


def test_alarm_bits_are_said_from_the_farms_profile_or_their_number(farms: Farms) -> None:
    farms.simulator.control("/alarm", {"group": "active_alarms", "bit": 3})
    farms.simulator.control("/alarm", {"group": "active_alarms", "bit": 5})
    wait_until(lambda: "<li>Inlet jammed</li>" in page(farms, f"/farms/{CUSTOM_FARM}"), 20, what="the named alarm")
    english = page(farms, f"/farms/{CUSTOM_FARM}")
    russian = page(farms, f"/farms/{CUSTOM_FARM}", "ru")
    assert "<li>Inlet jammed</li>" in english and "<li>alarm bit 5</li>" in english
    assert "<li>Заклинило клапан</li>" in russian and "<li>авария, бит 5</li>" in russian


def test_the_published_profile_is_version_2_and_keeps_the_version_1_keys() -> None:
    summary = load_profile().summary()
    data = json.loads(encode(summary))
    assert data["version"] == 2
    assert data["values"] == [v.name for v in load_profile().values] and "timezone_minutes" in data["writable"]
    assert data["units"]["temp_inside"] == "°C"
    old = ProfileSummary.model_validate({"name": "KUB-1063", "values": ["temp_inside"], "units": {"temp_inside": "°C"}})
    assert old.version == 1 and main_value(old) is not None and main_value(old).unit == "°C"  # type: ignore[union-attr]
    named = Alarms.model_validate_json(encode(Alarms(ts=utc_now(), active=[AlarmItem(bit=3, label="x")])))
    assert named.active[0].labels is None


def test_the_custom_farm_updates_live_in_a_browser_with_its_own_labels(farms: Farms) -> None:
    """Chromium at a phone's size: the page's script says the farm's named and unnamed bits from what it
    publishes, in the page's language, as they are raised."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for raised, (language, named, unnamed, event) in enumerate((
                ("en-GB", "Inlet jammed", "alarm bit 5", "Alarm: Inlet jammed"),
                ("ru-RU", "Заклинило клапан", "авария, бит 5", "Авария: Заклинило клапан"),
            ), start=1):
                context = browser.new_context(viewport={"width": 390, "height": 844}, locale=language,
                                              extra_http_headers={"Accept-Language": language})
                page = context.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda error, errors=errors: errors.append(str(error)))
                page.goto(f"http://127.0.0.1:{farms.web_port}/")
                page.fill("input[name=username]", "olga")
                page.fill("input[name=password]", "operator-pass")
                page.click("button[type=submit]")
                main = page.locator(f'[data-farm="{CUSTOM_FARM}"] [data-value="inlet_position"]')
                expect(main).not_to_have_text("—", timeout=10_000)
                farms.simulator.control("/raw", {"address": 0x008A, "value": 76 + raised, "function": "input"})
                expect(main).to_have_text(str(76 + raised), timeout=10_000)  # the list's main value, live
                page.goto(f"http://127.0.0.1:{farms.web_port}/farms/{CUSTOM_FARM}")
                expect(page.locator('.value[data-name="air_temp"] .label')).to_be_visible()
                expect(page.locator("[data-events]")).to_be_visible()
                for bit in (3, 5):
                    farms.simulator.control("/alarm", {"group": "active_alarms", "bit": bit, "on": True})
                expect(page.locator('[data-alarm-list="active"] li')).to_have_text([named, unnamed], timeout=10_000)
                # this time's event arrives live; the time before is on the page as rendered, in the same words
                expect(page.locator("[data-events] li").filter(has_text=event)).to_have_count(raised, timeout=10_000)
                for bit in (3, 5):
                    farms.simulator.control("/alarm", {"group": "active_alarms", "bit": bit, "on": False})
                expect(page.locator('[data-alarm-list="active"] li')).to_have_count(0, timeout=10_000)
                if raised == 1:  # the shipped farm's agent comes back with its value renamed: its open page follows
                    page.goto(f"http://127.0.0.1:{farms.web_port}/farms/{SHIPPED_FARM}")
                    expect(page.locator('.value[data-name="temp_inside"] .label')).to_have_text("Inside temperature")
                    edited = load_profile().summary()
                    edited.value_info[[v.name for v in edited.value_info].index("temp_inside")] = next(
                        v for v in edited.value_info if v.name == "temp_inside").model_copy(
                        update={"labels": Labels(en="Inside air", ru="Воздух внутри")})
                    announce_shipped_farm(farms.broker, farms.shipped_farm, edited)
                    expect(page.locator('.value[data-name="temp_inside"] .label')).to_have_text("Inside air",
                                                                                              timeout=10_000)
                context.close()
                assert errors == [], errors
        finally:
            browser.close()
