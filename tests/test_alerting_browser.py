"""The farm page's alerts in Chromium: an alarm bit opens an alert that appears without a reload, and
one tap acknowledges it for the operator (who the discovery node records)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from common.identities import Role
from tests.conftest import RunningBroker
from tests.farm_system import Agent, Simulator
from tests.helpers import ServiceProcess, free_port, wait_until
from tests.test_browser import FARM, Site, browser, log_in, page  # noqa: F401 - fixtures
from tests.test_discovery import TOKEN, start_discovery

pytestmark = pytest.mark.slow


@pytest.fixture
def site(broker: RunningBroker, tmp_path: Path, data_dir: Path) -> Iterator[Site]:
    """test_browser's site, with a discovery node on the same identities and a one-second ALERT_DELAY."""
    simulator = Simulator(tmp_path).start()
    farm = broker.add(FARM, Role.FARM, owner="owner-a")
    agent = Agent(tmp_path, tmp_path / "agent", FARM, broker.url(farm), simulator.modbus_url, poll_interval=1,
                  extra_env={"MAX_INTERVAL": "0"}).start()
    service = broker.add("mobile_web", Role.MOBILE_WEB)
    broker.store.add("olga", Role.OPERATOR, password="operator-pass")
    broker.store.add("vera", Role.VIEWER, password="viewer-pass")
    discovery = start_discovery(tmp_path, data_dir, mqtt_port=broker.port, env={
        "MQTT_URL": broker.url(broker.add("discovery", Role.DISCOVERY)), "ALERT_DELAY": "1"})
    port = free_port()
    web = ServiceProcess(
        ["mobile-web", "--data-dir", str(data_dir), "--host", "127.0.0.1", "--port", str(port)],
        tmp_path / "web.log", env={"MQTT_URL": broker.url(service), "POLL_INTERVAL": "1",
                                   "DISCOVERY_SERVICE_URL": f"http://127.0.0.1:{discovery.api_port}",
                                   "DISCOVERY_API_TOKEN": TOKEN},
    ).wait_port(port)
    yield Site(f"http://127.0.0.1:{port}", simulator, agent, ("olga", "operator-pass"), ("vera", "viewer-pass"),
               broker, discovery)
    web.stop()
    agent.stop()
    simulator.stop()
    discovery.process.stop()


def test_an_alert_appears_live_and_one_tap_acknowledges_it(page: Page, site: Site) -> None:  # noqa: F811
    log_in(page, site, site.operator)
    page.goto(f"{site.url}/farms/{FARM}")
    expect(page.locator("[data-alerts]")).to_contain_text("No open alerts")
    site.simulator.control("/alarm", {"group": "active_alarms", "bit": 5, "on": True})
    alert = page.locator("[data-alert]")
    expect(alert).to_contain_text("Controller alarm: alarm bit 5", timeout=15_000)  # no reload by hand
    expect(page.locator("[data-alerts]")).to_have_class(r"alerts card alarming")
    page.click("[data-acknowledge]")
    expect(alert).to_contain_text("acknowledged by olga", timeout=10_000)
    expect(page.locator("[data-acknowledge]")).to_have_count(0)
    [acknowledged] = wait_until(lambda: site.discovery.get(f"/api/alerts?farm={FARM}")[1]["alerts"], 10)
    assert acknowledged["acknowledged_by"] == "olga" and acknowledged["state"] == "acknowledged"
