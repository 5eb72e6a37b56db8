"""The notification settings page in Chromium, for the logged-in user's own settings (kept on the discovery
node, reached through its REST API): channels added, tested (a failing one shown as failed) and removed,
the lowest severity, quiet hours and language saved; and Web Push enabled on the phone.

For Web Push the test stands in for ONE thing: ``PushManager.prototype.subscribe``. A real browser's
subscribe asks its vendor's push service (FCM for Chromium) for an endpoint, and this machine has no
internet, so an init script replaces it with one that makes the subscription as a browser does — a
P-256 ECDH key pair and a 16-byte auth secret from WebCrypto — with an endpoint on a local HTTP
receiver. Everything else is real: the service worker, the page's button, the web keeping the
subscription as the user's channel through the discovery API, ``kubmesh notify test`` sending it with
pywebpush, and the payload decrypting (http_ece, aes128gcm) with the private key the page made.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import http_ece
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from playwright.sync_api import Page, expect

from tests.alert_receivers import HttpReceiver
from tests.helpers import wait_until
from tests.test_alerting_browser import site  # noqa: F401 - fixture
from tests.test_browser import FARM, Site, browser, log_in, no_sideways_scrolling, page  # noqa: F401 - fixtures

FAKE_SUBSCRIBE = """
PushManager.prototype.subscribe = async function (options) {
  const pair = await crypto.subtle.generateKey({ name: "ECDH", namedCurve: "P-256" }, true, ["deriveBits"]);
  const raw = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  const auth = crypto.getRandomValues(new Uint8Array(16));
  const b64 = (bytes) => btoa(String.fromCharCode(...bytes))
    .replace(/\\+/g, "-").replace(/\\//g, "_").replace(/=+$/, "");
  const jwk = await crypto.subtle.exportKey("jwk", pair.privateKey);
  localStorage.setItem("test-push-keys", JSON.stringify({ jwk, auth: b64(auth),
    server_key: b64(new Uint8Array(options.applicationServerKey)) }));
  const json = { endpoint: ENDPOINT, expirationTime: null, keys: { p256dh: b64(raw), auth: b64(auth) } };
  return { endpoint: ENDPOINT, toJSON: () => json };
};
"""


@pytest.fixture
def http() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver().start()
    yield receiver
    receiver.stop()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def channels(site: Site) -> list[str]:  # noqa: F811
    found = site.discovery.get("/api/notify/olga")[1]
    return [channel["url"] for channel in found["channels"]]


def test_a_user_adds_tests_and_removes_channels_and_sets_quiet_hours(
        page: Page, site: Site, http: HttpReceiver) -> None:  # noqa: F811
    working, failing = http.url("json", "/hook"), "json://127.0.0.1:9/nobody-listens"
    log_in(page, site, site.operator)
    page.click("[data-nav-notify]")
    expect(page.locator("[data-channels]")).to_contain_text("No channel yet")
    for count, url in enumerate((working, failing), 1):
        page.fill("[data-channel-url]", url)
        page.click("[data-add]")
        expect(page.locator("[data-channel]")).to_have_count(count)
    assert {url.partition("?")[0] for url in channels(site)} == {failing, working}

    page.click("[data-test]")
    expect(page.locator(f'[data-channel^="{failing}"] [data-test-result]')).to_contain_text("test failed")
    expect(page.locator(f'[data-channel^="{working}"] [data-test-result]')).to_have_text("test sent")
    assert len(http.on("/hook")) == 1  # the test message, really sent
    assert no_sideways_scrolling(page)  # a long channel URL wraps on the phone
    expect(page.locator(f'[data-channel^="{failing}"]')).to_have_class("failing")

    page.locator(f'[data-channel^="{failing}"] [data-remove]').click()
    expect(page.locator(f'[data-channel^="{failing}"]')).to_have_count(0)
    assert [url.partition("?")[0] for url in channels(site)] == [working]

    page.select_option("select[name=severity]", "critical")
    page.fill("input[name=quiet_start]", "22:00")
    page.fill("input[name=quiet_end]", "06:00")
    page.select_option("select[name=language]", "en")
    page.click("[data-save]")
    expect(page.locator("input[name=quiet_start]")).to_have_value("22:00")
    saved = site.discovery.get("/api/notify/olga")[1]
    assert (saved["quiet_start"], saved["quiet_end"], saved["language"]) == ("22:00", "06:00", "en")
    assert [c["severity"] for c in saved["channels"]] == ["critical"]


def test_web_push_is_enabled_on_the_phone_and_a_test_decrypts_with_the_pages_key(
        page: Page, site: Site, http: HttpReceiver, data_dir: Path) -> None:  # noqa: F811
    endpoint = http.url("http", "/push/phone")
    page.context.grant_permissions(["notifications"])
    page.add_init_script(FAKE_SUBSCRIBE.replace("ENDPOINT", json.dumps(endpoint)))
    log_in(page, site, site.operator)
    page.goto(f"{site.url}/notify")
    page.click("[data-webpush]")
    expect(page.locator('[data-channel^="webpush+"]')).to_contain_text("Web Push", timeout=15_000)
    assert channels(site) == [f"webpush+{endpoint}"]  # listed without its keys
    keys = json.loads(page.evaluate("localStorage.getItem('test-push-keys')"))
    assert keys["server_key"] == site.discovery.get("/api/notify/olga")[1]["webpush_key"]

    test = subprocess.run([sys.executable, "-m", "kubmesh", "notify", "test", "olga", "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=60)
    assert test.returncode == 0, test.stdout + test.stderr
    [pushed] = wait_until(lambda: http.on("/push/phone"), 10)
    private = ec.derive_private_key(int.from_bytes(unb64url(keys["jwk"]["d"]), "big"), ec.SECP256R1())
    plain = http_ece.decrypt(pushed.body, private_key=private, auth_secret=unb64url(keys["auth"]),
                             version="aes128gcm")
    assert json.loads(plain)["title"].startswith("kubmesh")


def test_the_service_worker_shows_a_pushed_alert_with_the_page_closed(page: Page, site: Site) -> None:  # noqa: F811
    """The push event is delivered to the service worker by Chromium's DevTools protocol (what the push
    service would hand the browser, already decrypted); the notification it shows links to the farm page."""
    page.context.grant_permissions(["notifications"])
    log_in(page, site, site.operator)
    page.evaluate("navigator.serviceWorker.ready.then(() => true)")
    page.goto("about:blank")  # no page of the site open: the worker is alone with the push
    cdp = page.context.new_cdp_session(page)
    registrations: list[dict[str, Any]] = []
    cdp.on("ServiceWorker.workerRegistrationUpdated", lambda event: registrations.extend(event["registrations"]))
    cdp.send("ServiceWorker.enable")
    # page.evaluate lets Playwright hand over the DevTools events that arrived meanwhile
    [registration] = wait_until(lambda: page.evaluate("1") and [
        r for r in registrations if r["scopeURL"] == site.url + "/" and not r["isDeleted"]], 10)
    message = {"title": "Farm 1: Controller alarm", "body": "alarm bit 5", "severity": "critical",
               "farm_id": FARM, "alerts": ["ab12"]}
    cdp.send("ServiceWorker.deliverPushMessage", {"origin": site.url, "registrationId": registration["registrationId"],
                                                  "data": json.dumps(message)})
    page.goto(f"{site.url}/alerts")
    shown = wait_until(lambda: page.evaluate(
        "navigator.serviceWorker.ready.then((r) => r.getNotifications())"
        ".then((list) => list.map((n) => ({title: n.title, body: n.body, tag: n.tag, data: n.data})))"), 10)
    assert shown == [{"title": message["title"], "body": "alarm bit 5", "tag": FARM, "data": {"url": f"/farms/{FARM}"}}]
