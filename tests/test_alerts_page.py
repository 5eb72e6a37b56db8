"""The alerts page in Chromium: an alarm bit's alert is listed for the farms the user sees, in the page's
language (built from its kind and subject, not the node's English message), an operator acknowledges it
with one tap, a viewer sees it without the button, and once the bit clears it is among the recent ones."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.helpers import wait_until
from tests.test_alerting_browser import site  # noqa: F401 - fixture
from tests.test_browser import FARM, Site, browser, log_in, page  # noqa: F401 - fixtures


def raise_bit(site: Site, on: bool) -> None:  # noqa: F811
    site.simulator.control("/alarm", {"group": "active_alarms", "bit": 5, "on": on})


def test_the_alerts_page_lists_acknowledges_and_keeps_the_recent_in_both_languages(
        page: Page, site: Site) -> None:  # noqa: F811
    raise_bit(site, True)
    wait_until(lambda: site.discovery.get(f"/api/alerts?farm={FARM}")[1]["alerts"], 15)
    log_in(page, site, site.viewer)
    page.goto(f"{site.url}/alerts")
    alert = page.locator("[data-alerts] [data-alert]")
    expect(alert).to_contain_text("Controller alarm: alarm bit 5")
    expect(page.locator("[data-acknowledge]")).to_have_count(0)  # a viewer sees, but may not acknowledge
    page.goto(f"{site.url}/lang/ru")
    page.goto(f"{site.url}/alerts")
    expect(alert).to_contain_text("Авария контроллера: авария, бит 5")
    page.context.clear_cookies()

    log_in(page, site, site.operator)
    page.goto(f"{site.url}/lang/en")
    page.goto(f"{site.url}/alerts")
    page.click("[data-acknowledge]")
    expect(page).to_have_url(f"{site.url}/alerts")
    [acknowledged] = wait_until(lambda: [a for a in site.discovery.get(f"/api/alerts?farm={FARM}")[1]["alerts"]
                                         if a["state"] == "acknowledged"], 10)
    assert acknowledged["acknowledged_by"] == "olga"
    def reloaded_acknowledged() -> bool:
        page.reload()
        return "acknowledged by olga" in page.inner_text("[data-alerts]")

    wait_until(reloaded_acknowledged, 10)
    expect(page.locator("[data-acknowledge]")).to_have_count(0)

    raise_bit(site, False)
    wait_until(lambda: site.discovery.get(f"/api/alerts?farm={FARM}")[1]["alerts"] == [], 15)
    page.reload()
    expect(page.locator("[data-recent] [data-recent-alert]")).to_contain_text("Controller alarm: alarm bit 5")
    expect(page.locator("[data-alerts]")).to_contain_text("No open alerts")
