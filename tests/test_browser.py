"""The mobile web in a real browser: Debian's Chromium driven by Playwright at a 390x844 phone viewport,
against real processes (broker, simulator, agent, mobile web). Each test saves a screenshot in
test-artifacts/."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from broker.identities import Role
from tests.conftest import RunningBroker
from tests.farm_system import Agent, Simulator
from tests.helpers import REPO, ServiceProcess, free_port

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


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def site(broker: RunningBroker, tmp_path: Path, data_dir: Path) -> Iterator[Site]:
    simulator = Simulator(tmp_path).start()
    farm = broker.add(FARM, Role.FARM, owner="owner-a")
    agent = Agent(tmp_path, data_dir, FARM, broker.url(farm), simulator.modbus_url, poll_interval=1,
                  extra_env={"MAX_INTERVAL": "0", "KUBMESH_FARM_NAME": "Птичник №1"}).start()
    service = broker.add("mobile_web", Role.MOBILE_WEB)
    broker.store.add("olga", Role.OPERATOR, password="operator-pass")
    broker.store.add("vera", Role.VIEWER, password="viewer-pass")
    port = free_port()
    web = ServiceProcess(
        ["mobile-web", "--data-dir", str(data_dir), "--host", "127.0.0.1", "--port", str(port)],
        tmp_path / "web.log", env={"MQTT_URL": broker.url(service), "POLL_INTERVAL": "1"},
    ).wait_port(port)
    yield Site(f"http://127.0.0.1:{port}", simulator, agent, ("olga", "operator-pass"), ("vera", "viewer-pass"))
    web.stop()
    agent.stop()
    simulator.stop()


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
    assert errors == [], errors


def log_in(page: Page, site: Site, who: tuple[str, str]) -> None:
    page.goto(site.url + "/")
    page.fill("input[name=username]", who[0])
    page.fill("input[name=password]", who[1])
    page.click("button[type=submit]")
    expect(page.locator(f'[data-farm="{FARM}"]')).to_be_visible(timeout=10_000)


def no_sideways_scrolling(page: Page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


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
    site.simulator.control("/alarm", {"group": "active_alarms", "bit": 5, "on": False})
    expect(page.locator('[data-alarm-list="active"] li')).to_have_text(["none"], timeout=10_000)
    expect(page.locator('[data-alarm-list="latched"] li')).to_have_text(["alarm bit 5"])


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
    expect(page.locator('[data-alarm-list="latched"] li')).to_have_text(["none"], timeout=10_000)
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


@pytest.mark.parametrize("page", ["ru-RU"], indirect=True)
def test_russian_interface(page: Page, site: Site) -> None:
    log_in(page, site, site.viewer)
    expect(page.locator("h1")).to_have_text("Фермы")
    expect(page.locator(f'[data-farm="{FARM}"] [data-presence]')).to_have_text("на связи")
    page.click(f'[data-farm="{FARM}"]')
    expect(page.locator('.value[data-name="temp_inside"] .label')).to_have_text("Температура внутри")
    expect(page.locator(".alarms h2")).to_have_text("Аварии")
    page.click("text=EN")
    expect(page.locator(".alarms h2")).to_have_text("Alarms")
