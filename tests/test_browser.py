"""The mobile web in a real browser: Debian's Chromium driven by Playwright at a 390x844 phone viewport,
against real processes (broker, simulator, agent, discovery node, mobile web). Each test saves a
screenshot in test-artifacts/ and fails on any JavaScript error or console error."""

from __future__ import annotations

import contextlib
import csv
import io
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import paho.mqtt.client as paho
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from common.identities import Credentials, Role
from contract.payloads import AlarmItem, Alarms, DeviceInfo, Meta, Reading, Status, encode, utc_now
from contract.topics import Topics
from farm_agent.profile import load_profile
from tests.conftest import RunningBroker
from tests.farm_system import Agent, Simulator, send_a_week_of_history
from tests.helpers import REPO, ServiceProcess, free_port, wait_until
from tests.test_discovery import TOKEN, Discovery, start_discovery

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts"
FARM = "farm-001"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


@dataclass
class Site:
    url: str
    simulator: Simulator
    agent: Agent
    operator: tuple[str, str]
    viewer: tuple[str, str]
    broker: RunningBroker
    discovery: Discovery


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@contextlib.contextmanager
def running_site(broker: RunningBroker, tmp_path: Path, data_dir: Path, *, agent_data: Path,
                 agent_env: dict[str, str], discovery_data: Path, discovery_env: dict[str, str]) -> Iterator[Site]:
    """A simulator and its agent, a discovery node and the web on ``broker``, with an operator and a viewer."""
    simulator = Simulator(tmp_path).start()
    farm = broker.add(FARM, Role.FARM, owner="owner-a")
    agent = Agent(tmp_path, agent_data, FARM, broker.url(farm), simulator.modbus_url, poll_interval=1,
                  extra_env={"MAX_INTERVAL": "0", **agent_env}).start()
    service = broker.add("mobile_web", Role.MOBILE_WEB)
    broker.store.add("olga", Role.OPERATOR, password="operator-pass")
    broker.store.add("vera", Role.VIEWER, password="viewer-pass")
    discovery = start_discovery(tmp_path, discovery_data, mqtt_port=broker.port,
                                env={"MQTT_URL": broker.url(broker.add("discovery", Role.DISCOVERY)), **discovery_env})
    port = free_port()
    web = ServiceProcess(
        ["mobile-web", "--data-dir", str(data_dir), "--host", "127.0.0.1", "--port", str(port)],
        tmp_path / "web.log", env={"MQTT_URL": broker.url(service), "POLL_INTERVAL": "1",
                                   "DISCOVERY_SERVICE_URL": f"http://127.0.0.1:{discovery.api_port}",
                                   "DISCOVERY_API_TOKEN": TOKEN},
    ).wait_port(port)
    try:
        yield Site(f"http://127.0.0.1:{port}", simulator, agent, ("olga", "operator-pass"), ("vera", "viewer-pass"),
                   broker, discovery)
    finally:
        web.stop()
        agent.stop()
        simulator.stop()
        discovery.process.stop()


@pytest.fixture
def site(broker: RunningBroker, tmp_path: Path, data_dir: Path) -> Iterator[Site]:
    with running_site(broker, tmp_path, data_dir, agent_data=data_dir, agent_env={"KUBMESH_FARM_NAME": "Птичник №1"},
                      discovery_data=tmp_path / "discovery-data", discovery_env={}) as running:
        yield running


@pytest.fixture
def page(browser: Browser, site: Site, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A phone-sized page; it closes (and its console is checked) before the site stops."""
    language = getattr(request, "param", "en-GB")
    context = browser.new_context(viewport={"width": 390, "height": 844}, locale=language,
                                  extra_http_headers={"Accept-Language": language})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()
    if "offline_shell" in request.node.name:  # with the network cut, the browser reports what it could not load
        errors = [e for e in errors if "ERR_INTERNET_DISCONNECTED" not in e]
    assert errors == [], errors


def log_in(page: Page, site: Site, who: tuple[str, str]) -> None:
    page.goto(site.url + "/")
    page.fill("input[name=username]", who[0])
    page.fill("input[name=password]", who[1])
    page.click("button[type=submit]")
    expect(page.locator(f'[data-farm="{FARM}"]')).to_be_visible(timeout=10_000)


def no_sideways_scrolling(page: Page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def small_touch_targets(page: Page) -> list[str]:
    """Visible links, buttons and fields smaller than 44 px either way (inline text links excepted)."""
    return list(page.evaluate("""() => Array.from(document.querySelectorAll(
        "a, button, select, input:not([type=hidden])")).filter((el) => {
          const box = el.getBoundingClientRect();
          return box.width > 0 && (box.height < 44 || box.width < 44);
        }).map((el) => el.outerHTML.slice(0, 80))"""))


def connect_farm(site: Site, farm: Credentials) -> paho.Client:
    """A farm's MQTT link, kept open while the test runs (the embedded broker may drop what a client
    published just before it disconnected)."""
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=farm.username)
    client.username_pw_set(farm.username, farm.password)
    client.connect("127.0.0.1", site.broker.port, keepalive=30)
    client.loop_start()
    return client


LOW_CONTRAST_JS = """() => {
  const parse = (c) => {
    const p = c.match(/rgba?\\(([^)]+)\\)/)[1].split(",").map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const channel = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
  const lum = (rgb) => 0.2126 * channel(rgb[0]) + 0.7152 * channel(rgb[1]) + 0.0722 * channel(rgb[2]);
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c[3] > 0) return c;
    }
    return [255, 255, 255, 1];
  };
  const low = [];
  document.querySelectorAll("body *").forEach((el) => {
    if (el.closest("svg") || !el.getClientRects().length) return;
    if (!Array.from(el.childNodes).some((n) => n.nodeType === 3 && n.textContent.trim())) return;
    let alpha = parse(getComputedStyle(el).color)[3];
    for (let e = el; e; e = e.parentElement) alpha *= parseFloat(getComputedStyle(e).opacity);
    const fg = parse(getComputedStyle(el).color), bg = background(el);
    const shown = [0, 1, 2].map((i) => fg[i] * alpha + bg[i] * (1 - alpha));
    const [hi, lo] = [lum(shown), lum(bg)].sort((a, b) => b - a);
    const ratio = (hi + 0.05) / (lo + 0.05);
    if (ratio < 4.5) low.push(`${el.tagName}.${el.className} ${ratio.toFixed(2)} ${el.textContent.trim()}`);
  });
  return low;
}"""


def low_contrast_text(page: Page) -> list[str]:
    """Visible text below WCAG AA's 4.5:1 against the background it sits on (opacity counted)."""
    return list(page.evaluate(LOW_CONTRAST_JS))


def publish_second_farm(client: paho.Client, alarm: bool) -> None:
    """farm-002 as its agent would announce it (retained), optionally with an active alarm."""
    topics, now = Topics(), utc_now()
    item = AlarmItem(bit=7, label="alarm bit 7")
    messages = [
        (topics.status("farm-002"), encode(Status(state="online", ts=now))),
        (topics.meta("farm-002"), encode(Meta(
            farm_id="farm-002", name="Теплица №2", owner_id="owner-a", device=DeviceInfo(model="KUB-1063"),
            agent_version="test", poll_interval_s=1, profile=load_profile().summary(), ts=now))),
        (topics.state("farm-002"), encode(Reading(ts=now, seq=1, values={"temp_inside": 19.5},
                                                  status={"temp_inside": "ok"}))),
        (topics.alarms("farm-002"), encode(Alarms(ts=now, active=[item] if alarm else []))),
    ]
    for topic, payload in messages:
        client.publish(topic, payload, qos=1, retain=True).wait_for_publish(10)


def test_login_list_and_live_farm_page(page: Page, site: Site) -> None:
    log_in(page, site, site.viewer)
    expect(page.locator(f'[data-farm="{FARM}"] [data-presence]')).to_have_text("online")
    assert no_sideways_scrolling(page)
    page.click(f'[data-farm="{FARM}"]')
    temperature = page.locator('[data-value="temp_inside"]')
    expect(temperature).to_have_text(re.compile(r"^-?\d+\.\d$"), timeout=10_000)
    expect(page.locator('.value[data-name="temp_inside"] .unit')).to_have_text("°C")
    site.simulator.control("/raw", {"address": 0x00D5, "value": 123, "function": "input"})
    expect(temperature).to_have_text("12.3", timeout=10_000)  # arrived over SSE: no reload
    assert no_sideways_scrolling(page)
    assert page.locator("form.command").count() == 0  # a viewer gets no controls


def test_sensor_break_and_alarm_appear_and_clear(page: Page, site: Site) -> None:
    log_in(page, site, site.viewer)
    page.goto(f"{site.url}/farms/{FARM}")
    site.simulator.control("/sentinel", {"name": "humidity", "status": "break"})
    site.simulator.control("/alarm", {"group": "active_alarms", "bit": 5, "on": True})
    humidity = page.locator('.value[data-name="humidity"]')
    expect(humidity.locator("[data-status-text]")).to_have_text("sensor break", timeout=10_000)
    expect(humidity.locator("[data-value]")).to_have_text("—")
    expect(page.locator('[data-alarm-list="active"] li')).to_have_text(["alarm bit 5"], timeout=10_000)
    page.screenshot(path=str(ARTIFACTS / "alarm-raised.png"), full_page=True)
    expect(page.locator("[data-no-alarms]")).to_be_hidden()
    expect(page.locator("[data-alarms]")).to_have_class(re.compile(r"\balarming\b"))
    site.simulator.control("/alarm", {"group": "active_alarms", "bit": 5, "on": False})
    expect(page.locator('[data-alarm-list="active"]')).to_be_hidden(timeout=10_000)
    expect(page.locator('[data-alarm-list="latched"] li')).to_have_text(["alarm bit 5"])
    expect(page.locator("[data-alarms]")).not_to_have_class(re.compile(r"\balarming\b"))
    expect(page.locator("[data-events] li").first).to_contain_text("Alarm cleared: alarm bit 5", timeout=10_000)


def test_operator_resets_latched_alarms_and_sees_the_result(page: Page, site: Site) -> None:
    site.simulator.control("/alarm", {"group": "active_alarms", "bit": 2, "on": True})
    site.simulator.control("/alarm", {"group": "active_alarms", "bit": 2, "on": False})
    log_in(page, site, site.operator)
    page.goto(f"{site.url}/farms/{FARM}")
    expect(page.locator('[data-alarm-list="latched"] li')).to_have_text(["alarm bit 2"], timeout=10_000)
    page.once("dialog", lambda dialog: dialog.accept())
    form = page.locator('form[data-command="reset_alarms"]')
    form.locator("button").click()
    expect(form.locator(".command-result")).to_have_text("done", timeout=10_000)
    expect(page.locator('[data-alarm-list="latched"]')).to_be_hidden(timeout=10_000)
    expect(page.locator("[data-no-alarms]")).to_be_visible()
    assert [w["address"] for w in site.simulator.stats()["writes"]] == [0x0020]

    setting = page.locator('form[data-command="timezone_minutes"]')
    setting.locator("input").fill("5000")
    setting.locator("button").click()  # the browser's own range check stops it
    assert setting.locator(".command-result").inner_text() == ""
    setting.locator("input").fill("-120")
    setting.locator("button").click()
    expect(setting.locator(".command-result")).to_have_text("done", timeout=10_000)


def test_a_killed_agent_shows_offline_without_reload(page: Page, site: Site) -> None:
    log_in(page, site, site.viewer)
    page.goto(f"{site.url}/farms/{FARM}")
    expect(page.locator(".status-line [data-presence]")).to_have_text("online")
    assert site.agent.process is not None
    site.agent.process.kill()
    # keepalive is 5 s in these tests; SIGKILL closes the socket, so the will comes at once
    expect(page.locator(".status-line [data-presence]")).to_have_text("offline", timeout=7_500)
    expect(page.locator("main#farm")).to_have_class(re.compile(r"\bstale\b"))
    expect(page.locator(".stale-tag")).to_be_visible()


def test_values_turn_stale_when_the_controller_stops_answering(page: Page, site: Site) -> None:
    log_in(page, site, site.viewer)
    page.goto(f"{site.url}/farms/{FARM}")
    main = page.locator("main#farm")
    expect(main).not_to_have_class(re.compile(r"\bstale\b"), timeout=10_000)
    site.simulator.control("/fail", {"mode": "exception", "function": 4})  # input registers: no more readings
    # the agent stays online, its heartbeat says Modbus error, and two poll intervals (1 s) later the values are old
    expect(main).to_have_class(re.compile(r"\bstale\b"), timeout=10_000)
    expect(page.locator(".stale-tag")).to_be_visible()
    expect(page.locator(".status-line [data-presence]")).to_have_text("online")
    expect(page.locator("[data-events] li").first).to_contain_text("The controller does not answer")
    page.screenshot(path=str(ARTIFACTS / "stale-values.png"), full_page=True)
    site.simulator.control("/fail", {"mode": None})
    expect(main).not_to_have_class(re.compile(r"\bstale\b"), timeout=10_000)


@pytest.mark.parametrize("page", ["ru-RU"], indirect=True)
def test_russian_interface(page: Page, site: Site) -> None:
    log_in(page, site, site.viewer)
    expect(page.locator("h1")).to_have_text("Фермы")
    expect(page.locator(f'[data-farm="{FARM}"] [data-presence]')).to_have_text("на связи")
    page.click(f'[data-farm="{FARM}"]')
    expect(page.locator('.value[data-name="temp_inside"] .label')).to_have_text("Температура внутри")
    expect(page.locator(".alarms h2")).to_have_text("Аварии")
    expect(page.locator("[data-no-alarms]")).to_have_text("Аварий нет")
    site.simulator.control("/alarm", {"group": "active_alarms", "bit": 3, "on": True})
    expect(page.locator('[data-alarm-list="active"] li')).to_have_text(["авария, бит 3"], timeout=10_000)
    expect(page.locator("[data-events] li").first).to_contain_text("Авария: авария, бит 3")
    expect(page.locator('[data-range="24h"]')).to_have_text("24 ч")
    expect(page.locator("[data-chart-note]")).to_have_text(re.compile(r"^Температура внутри: "), timeout=10_000)
    page.screenshot(path=str(ARTIFACTS / "russian-farm-page.png"), full_page=True)
    page.click("text=EN")
    expect(page.locator(".alarms h2")).to_have_text("Alarms")


def test_farm_list_puts_alarms_first_and_reorders_live(page: Page, site: Site) -> None:
    farm = connect_farm(site, site.broker.add("farm-002", Role.FARM, owner="owner-a"))
    publish_second_farm(farm, alarm=False)
    log_in(page, site, site.viewer)
    cards = page.locator("ul.farms [data-farm]")
    expect(cards).to_have_count(2, timeout=10_000)
    expect(cards.nth(0)).to_have_attribute("data-farm", FARM)  # by name: Птичник before Теплица
    expect(page.locator(f'[data-farm="{FARM}"] .temp')).to_have_text(re.compile(r"^-?\d+\.\d °C$"))
    expect(page.locator(f'[data-farm="{FARM}"] .seen time')).to_have_text(re.compile(r"^\d+ s$"))
    publish_second_farm(farm, alarm=True)
    expect(page.locator('[data-farm="farm-002"] [data-alarm-count]')).to_have_text("1", timeout=10_000)
    expect(cards.nth(0)).to_have_attribute("data-farm", "farm-002")  # an alarm goes to the top, no reload
    expect(cards.nth(0)).to_have_class(re.compile(r"\balarming\b"))
    # farm-002 has no agent behind it: no reading comes after the first, so it turns stale
    expect(page.locator('[data-farm="farm-002"]')).to_have_class(re.compile(r"\bstale\b"), timeout=10_000)
    expect(page.locator(f'[data-farm="{FARM}"]')).not_to_have_class(re.compile(r"\bstale\b"))
    page.reload()
    expect(cards.nth(0)).to_have_attribute("data-farm", "farm-002")  # the server sorts the same way
    farm.disconnect()
    farm.loop_stop()


def test_history_chart_of_a_chosen_value(page: Page, site: Site) -> None:
    sent = send_a_week_of_history(site.broker.port, site.broker.admin, FARM)
    wait_until(lambda: site.discovery.get(f"/api/farms/{FARM}")[1]["history"]["readings"] >= sent, 20,
               what="the week of history stored by the discovery node")
    log_in(page, site, site.viewer)
    page.goto(f"{site.url}/farms/{FARM}")
    chart = page.locator("[data-chart]")
    chart.scroll_into_view_if_needed()
    expect(chart).to_have_attribute("data-points", re.compile(r"^(9[6-9]|100)$"), timeout=10_000)  # 24 h, 15 min
    expect(chart.locator("polyline.line")).to_have_count(1)
    expect(chart.locator("[data-chart-note]")).to_have_text(re.compile(r"^Inside temperature: -?\d+\.\d °C$"))
    chart.locator("[data-chart-name]").select_option("humidity")
    chart.locator('[data-range="7d"]').click()
    expect(chart.locator('[data-range="7d"]')).to_have_attribute("aria-pressed", "true")
    expect(chart.locator("[data-chart-note]")).to_have_text(re.compile(r"^Humidity: "), timeout=10_000)
    expect(chart).to_have_attribute("data-points", re.compile(r"^8[4-6]$"))  # 7 days in 2 h buckets
    assert no_sideways_scrolling(page)


def test_no_sideways_scrolling_big_touch_targets_and_contrast(page: Page, site: Site) -> None:
    log_in(page, site, site.operator)
    for width in (360, 390, 430):
        page.set_viewport_size({"width": width, "height": 844})
        page.goto(f"{site.url}/")
        expect(page.locator(f'[data-farm="{FARM}"]')).to_be_visible()
        assert no_sideways_scrolling(page), width
        assert small_touch_targets(page) == [], width
        assert low_contrast_text(page) == [], width
        page.goto(f"{site.url}/farms/{FARM}")
        expect(page.locator('[data-value="temp_inside"]')).to_have_text(re.compile(r"^-?\d+\.\d$"), timeout=10_000)
        expect(page.locator("[data-chart]")).to_have_attribute("data-points", re.compile(r"^\d+$"), timeout=10_000)
        assert no_sideways_scrolling(page), width
        assert small_touch_targets(page) == [], width
        assert low_contrast_text(page) == [], width
        page.screenshot(path=str(ARTIFACTS / f"farm-page-{width}px.png"), full_page=True)


def test_offline_shell_opens_without_network_and_says_so(page: Page, site: Site) -> None:
    log_in(page, site, site.viewer)
    page.goto(f"{site.url}/farms/{FARM}")
    page.evaluate("navigator.serviceWorker.ready.then(() => true)")
    page.wait_for_function("navigator.serviceWorker.controller !== null")  # the worker has taken the page
    page.context.set_offline(True)
    expect(page.locator("#offline-notice")).to_be_visible()  # the open page says so at once
    page.reload()
    expect(page.locator("h1")).to_have_text("You are offline")
    expect(page.locator("link[rel=stylesheet]")).to_have_count(1)
    assert page.evaluate("getComputedStyle(document.querySelector('.bar')).display") == "flex"  # styled: cached
    page.screenshot(path=str(ARTIFACTS / "offline-shell.png"), full_page=True)
    page.context.set_offline(False)
    page.click("[data-action=reload]")
    expect(page.locator("h1")).to_have_text("Птичник №1", timeout=10_000)

    page.click("text=RU")  # the offline page follows the language switch
    expect(page.locator(".alarms h2")).to_have_text("Аварии")
    kept_in_russian = """async () => {
        for (const name of await caches.keys()) {
          const kept = await (await caches.open(name)).match("/offline");
          if (kept && (await kept.text()).includes("Нет сети")) return true;
        }
        return false;
    }"""
    wait_until(lambda: page.evaluate(kept_in_russian), 10, what="the offline page kept in Russian")
    page.context.set_offline(True)
    page.reload()
    expect(page.locator("h1")).to_have_text("Нет сети")


@contextlib.contextmanager
def phone(browser: Browser, name: str, accept_language: str, locale: str = "ru-RU",
          timezone_id: str | None = None) -> Iterator[Page]:
    """Another phone (its own cookies), 390 px wide, with its browser's language and time zone; no JS errors."""
    context = browser.new_context(viewport={"width": 390, "height": 844}, locale=locale, timezone_id=timezone_id,
                                  extra_http_headers={"Accept-Language": accept_language}, accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield page
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    finally:
        context.close()
    assert errors == [], errors


def test_farm_page_puts_first_what_a_farmer_looks_at(page: Page, site: Site) -> None:
    log_in(page, site, site.viewer)
    page.goto(f"{site.url}/farms/{FARM}")
    expect(page.locator('[data-value="temp_inside"]')).to_have_text(re.compile(r"^-?\d+\.\d$"), timeout=10_000)
    first = page.locator("section.values .value").evaluate_all("(boxes) => boxes.map((b) => b.dataset.name)")[:7]
    assert first == ["temp_inside", "temp_target", "humidity", "co2", "nh3", "pressure", "ventilation_level"]
    box = page.locator('.value[data-name="temp_inside"]').bounding_box()
    assert box is not None and box["y"] < 844, "inside temperature shows without scrolling"


def test_farm_list_follows_farms_appearing_and_leaving_live(page: Page, site: Site) -> None:
    log_in(page, site, site.viewer)
    cards = page.locator("ul.farms [data-farm]")
    expect(cards).to_have_count(1)
    page.evaluate("window.notReloaded = true")
    farm = connect_farm(site, site.broker.add("farm-002", Role.FARM, owner="owner-a"))
    try:
        publish_second_farm(farm, alarm=True)
        expect(cards).to_have_count(2, timeout=10_000)
        new = page.locator('[data-farm="farm-002"]')
        expect(new.locator(".name")).to_have_text("Теплица №2")
        expect(new.locator("[data-alarm-count]")).to_have_text("1")
        expect(cards.nth(0)).to_have_attribute("data-farm", "farm-002")  # sorted in: an alarm goes first
        # it is removed (kubmesh farm remove clears its retained topics): its card goes
        farm.publish(Topics().status("farm-002"), b"", qos=1, retain=True).wait_for_publish(10)
        expect(cards).to_have_count(1, timeout=10_000)
        expect(cards.nth(0)).to_have_attribute("data-farm", FARM)
        assert page.evaluate("window.notReloaded") is True, "all of it without a reload"
    finally:
        farm.disconnect()
        farm.loop_stop()


def test_a_russian_phone_opens_in_russian_and_the_choice_follows_the_user(browser: Browser, site: Site) -> None:
    with phone(browser, "russian-first-visit", "ru-RU,ru;q=0.9") as first:
        first.goto(site.url + "/")
        expect(first.locator("html")).to_have_attribute("lang", "ru")
        expect(first.locator("button[type=submit]")).to_have_text("Вход")
        log_in(first, site, site.viewer)
        expect(first.locator("h1")).to_have_text("Фермы")
        first.click("text=EN")  # the farmer prefers English after all
        expect(first.locator("h1")).to_have_text("Farms")
    # the same farmer on another phone that asks for Russian only: the choice is theirs, not the old phone's
    with phone(browser, "choice-follows-the-user", "ru-RU") as second:
        log_in(second, site, site.viewer)
        expect(second.locator("h1")).to_have_text("Farms")
    with phone(browser, "another-user-in-russian", "ru-RU") as third:
        log_in(third, site, site.operator)
        expect(third.locator("h1")).to_have_text("Фермы")


def test_csv_export_from_the_farm_page_opens_as_a_spreadsheet(browser: Browser, site: Site) -> None:
    sent = send_a_week_of_history(site.broker.port, site.broker.admin, FARM)
    wait_until(lambda: site.discovery.get(f"/api/farms/{FARM}")[1]["history"]["readings"] >= sent, 20,
               what="the week of history stored by the discovery node")
    zone = ZoneInfo("Asia/Novosibirsk")
    with phone(browser, "csv-export", "ru-RU,ru;q=0.9", timezone_id="Asia/Novosibirsk") as page:
        log_in(page, site, site.viewer)
        page.goto(f"{site.url}/farms/{FARM}")
        export = page.locator("[data-export]")
        export.scroll_into_view_if_needed()
        expect(export.locator("h2")).to_have_text("Выгрузка")
        export.locator('input[value="temp_target"]').uncheck()
        export.locator('input[value="temp_inside"]').check()
        today = datetime.now(zone).date()
        export.locator("input[name=from]").fill((today - timedelta(days=2)).isoformat())
        export.locator("input[name=to]").fill(today.isoformat())
        with page.expect_download() as download:
            export.locator("button[type=submit]").click()
        data = download.value.path().read_bytes()  # before the context closes and takes the file with it
        assert download.value.suggested_filename == f"{FARM}-{today - timedelta(days=2)}-{today}.csv"
    assert data.startswith(b"\xef\xbb\xbf"), "UTF-8 with BOM, for Excel"
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig")), delimiter=";"))
    assert rows[0] == ["время (Asia/Novosibirsk)", "Температура внутри, °C", "Влажность, %"]
    start = datetime.combine(today - timedelta(days=2), datetime.min.time(), zone)
    first = datetime.strptime(rows[1][0], "%Y-%m-%d %H:%M:%S").replace(tzinfo=zone)
    assert start <= first < start + timedelta(minutes=15), "times in the phone's time zone, from its midnight"
    assert len(rows) > 2 * 24 * 4, "three days of 15-minute readings, the last one up to now"
    assert re.fullmatch(r"-?\d+,\d", rows[1][1]) and 21 <= float(rows[1][1].replace(",", ".")) <= 27
