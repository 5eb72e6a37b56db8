"""The farm page's alerts in Chromium: an alarm bit opens an alert that appears without a reload, and
one tap acknowledges it for the operator (who the discovery node records)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import RunningBroker
from tests.helpers import wait_until
from tests.test_browser import FARM, Site, browser, log_in, page, running_site  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow


@pytest.fixture
def site(broker: RunningBroker, tmp_path: Path, data_dir: Path) -> Iterator[Site]:
    """test_browser's site, with a discovery node on the same identities and a one-second ALERT_DELAY."""
    with running_site(broker, tmp_path, data_dir, agent_data=tmp_path / "agent", agent_env={},
                      discovery_data=data_dir, discovery_env={"ALERT_DELAY": "1"}) as running:
        yield running


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
