"""The mobile web's doors: roles, owner scope, cookies, CSRF, login throttling, logs and headers."""

from __future__ import annotations

import logging
import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st

from common.identities import IdentityStore, Role
from common.settings import ConfigError, load_settings
from mobile_web.app import create_app
from mobile_web.redirects import local_target
from mobile_web.settings import WebSettings
from tests.test_mobile_web import FARM, RecordingBridge, csrf_token, feed_farm, log_in

TEMPLATES = Path(__file__).resolve().parent.parent / "mobile_web" / "templates"
SECRET = "Correct-Horse-Battery-42"


@pytest.fixture
def app(data_dir: Path) -> Iterator[tuple[Flask, RecordingBridge, IdentityStore]]:
    store = IdentityStore(data_dir)
    store.add("olga", Role.OPERATOR, password=SECRET)
    store.add("vera", Role.VIEWER, password=SECRET)
    store.add("oleg", Role.OPERATOR, owner="owner-a", password=SECRET)
    store.add("farm-b1", Role.FARM, owner="owner-b")
    bridge = RecordingBridge()
    feed_farm(bridge, FARM, owner="owner-a")
    feed_farm(bridge, "farm-b1", owner="owner-a")  # its agent claims owner-a; kubmesh farm add said owner-b
    yield create_app(WebSettings(data_dir=data_dir, login_limit="5 per minute", login_delay_max_s=0.05), bridge), \
        bridge, store


def command(client: FlaskClient, farm_id: str = FARM, token: str | None = None) -> int:
    headers = {"X-CSRFToken": token or csrf_token(client, "/")}
    return client.post(f"/farms/{farm_id}/commands", json={"name": "reset_alarms", "value": 1},
                       headers=headers).status_code


def test_viewer_sees_no_control_and_its_forged_command_is_refused(
    app: tuple[Flask, RecordingBridge, IdentityStore],
) -> None:
    flask_app, bridge, _ = app
    viewer = flask_app.test_client()
    log_in(viewer, "vera", SECRET)
    page = viewer.get(f"/farms/{FARM}").get_data(as_text=True)
    assert "data-command" not in page and 'class="card controls"' not in page
    assert command(viewer) == 403
    operator = flask_app.test_client()
    log_in(operator, "olga", SECRET)
    assert "data-command" in operator.get(f"/farms/{FARM}").get_data(as_text=True)
    assert command(operator) == 202
    assert [(farm, name) for farm, name, _ in bridge.sent] == [(FARM, "reset_alarms")]


def test_an_owner_scoped_operator_sees_and_commands_only_its_owners_farms(
    app: tuple[Flask, RecordingBridge, IdentityStore],
) -> None:
    flask_app, bridge, _ = app
    client = flask_app.test_client()
    log_in(client, "oleg", SECRET)
    listing = client.get("/").get_data(as_text=True)
    assert FARM in listing and "farm-b1" not in listing
    assert client.get("/farms/farm-b1").status_code == 404
    assert command(client, "farm-b1") == 404
    assert command(client, FARM) == 202
    assert [farm for farm, _, _ in bridge.sent] == [FARM]


def test_session_cookie_is_httponly_samesite_and_secure_over_https(
    app: tuple[Flask, RecordingBridge, IdentityStore],
) -> None:
    flask_app = app[0]
    plain = log_in(flask_app.test_client(), "vera", SECRET).headers["Set-Cookie"]
    assert "HttpOnly" in plain and "SameSite=Lax" in plain and "Secure" not in plain
    https = flask_app.test_client()
    page = https.get("/login", base_url="https://localhost").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token
    form = {"username": "vera", "password": SECRET, "csrf_token": token.group(1)}
    assert https.post("/login", base_url="https://localhost", data=form).status_code == 400  # no Referer
    https_login = https.post("/login", base_url="https://localhost", data=form,
                             headers={"Referer": "https://localhost/login"})
    cookie = https_login.headers["Set-Cookie"]
    assert https_login.status_code == 302 and "Secure" in cookie and "HttpOnly" in cookie


def test_every_form_and_command_needs_the_csrf_token(app: tuple[Flask, RecordingBridge, IdentityStore]) -> None:
    flask_app, bridge, _ = app
    client = flask_app.test_client()
    assert client.post("/login", data={"username": "olga", "password": SECRET}).status_code == 400
    log_in(client, "olga", SECRET)
    assert client.post(f"/farms/{FARM}/commands", json={"name": "reset_alarms", "value": 1}).status_code == 400
    assert command(client, token="forged-token") == 400
    assert client.post("/logout").status_code == 400
    assert client.get("/").status_code == 200  # still logged in: the forged logout did nothing
    assert bridge.sent == []
    forms = [f for page in TEMPLATES.glob("*.html") for f in re.findall(r"<form[^>]*>.*?</form>", page.read_text(),
                                                                       re.S)]
    assert forms and all('method="post"' not in form or "csrf_token" in form for form in forms)


def attempt(flask_app: Flask, address: str, username: str, password: str = "wrong",
            forwarded_for: str | None = None) -> tuple[int, str | None]:
    client = flask_app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    token = csrf_token(client)
    response = client.post("/login", data={"username": username, "password": password, "csrf_token": token},
                           headers=headers)
    return response.status_code, response.headers.get("Retry-After")


def test_failed_logins_are_throttled_per_address_and_account(
    app: tuple[Flask, RecordingBridge, IdentityStore],
) -> None:
    flask_app = app[0]
    for _ in range(5):
        assert attempt(flask_app, "10.0.0.1", "vera")[0] == 401
    status, retry_after = attempt(flask_app, "10.0.0.1", "vera", SECRET)
    assert status == 429 and retry_after and int(retry_after) > 0  # the guesser's address, for that account
    assert attempt(flask_app, "10.0.0.1", "olga", SECRET)[0] == 302  # another account from it is not locked
    assert attempt(flask_app, "10.0.0.1", "Vera ", SECRET)[0] == 429  # nor is a respelt name a way round


def test_a_guesser_from_one_address_cannot_lock_the_owner_out_from_another(
    app: tuple[Flask, RecordingBridge, IdentityStore],
) -> None:
    flask_app = app[0]
    for index in range(20):  # a known name guessed from one address, then from several
        attempt(flask_app, "203.0.113.5" if index < 10 else f"203.0.113.{index}", "vera")
    assert attempt(flask_app, "198.51.100.7", "vera", SECRET)[0] == 302  # the owner's phone


def test_loopback_is_not_exempt_and_forwarded_for_counts_only_from_a_trusted_proxy(
    app: tuple[Flask, RecordingBridge, IdentityStore], data_dir: Path,
) -> None:
    flask_app = app[0]
    for index in range(5):  # a spoofed X-Forwarded-For from an untrusted caller changes nothing
        assert attempt(flask_app, "127.0.0.1", "vera", forwarded_for=f"192.0.2.{index}")[0] == 401
    assert attempt(flask_app, "127.0.0.1", "vera", SECRET, forwarded_for="192.0.2.77")[0] == 429
    behind_proxy = create_app(WebSettings(data_dir=data_dir, login_limit="5 per minute", login_delay_max_s=0.05,
                                          trusted_proxies=["127.0.0.1", "::1"]), RecordingBridge())
    for _ in range(5):  # through `tailscale serve` on this host: every caller is loopback
        assert attempt(behind_proxy, "127.0.0.1", "olga", forwarded_for="203.0.113.5")[0] == 401
    assert attempt(behind_proxy, "127.0.0.1", "olga", SECRET, forwarded_for="203.0.113.5")[0] == 429
    assert attempt(behind_proxy, "127.0.0.1", "olga", SECRET, forwarded_for="198.51.100.7")[0] == 302
    # a client's own X-Forwarded-For entries before the proxy's are not believed: the proxy appends the caller
    assert attempt(behind_proxy, "127.0.0.1", "olga", SECRET, forwarded_for="198.51.100.7, 203.0.113.5")[0] == 429


def test_failed_logins_of_a_name_slow_its_next_login_which_a_right_password_still_passes(
    app: tuple[Flask, RecordingBridge, IdentityStore],
) -> None:
    flask_app = app[0]
    waited: list[float] = []
    delays = flask_app.extensions["kubmesh.login_delays"]
    delays.sleep = waited.append
    for index in range(8):
        attempt(flask_app, f"203.0.113.{index}", "vera")
    assert waited and waited == sorted(waited) and max(waited) <= delays.max_delay_s
    waited.clear()
    assert attempt(flask_app, "198.51.100.7", "vera", SECRET)[0] == 302
    assert waited and waited[0] > 0
    waited.clear()
    assert attempt(flask_app, "198.51.100.8", "olga", SECRET)[0] == 302 and waited == []  # others wait for nothing


def test_session_cookie_is_secure_and_hsts_sent_behind_an_https_proxy(
    app: tuple[Flask, RecordingBridge, IdentityStore],
) -> None:
    flask_app = app[0]
    client = flask_app.test_client()
    https = {"X-Forwarded-Proto": "https"}
    page = client.get("/login", headers=https)
    assert page.headers["Strict-Transport-Security"].startswith("max-age=")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True))
    assert token
    answer = client.post("/login", data={"username": "vera", "password": SECRET, "csrf_token": token.group(1)},
                         headers=https)
    assert answer.status_code == 302 and "Secure" in answer.headers["Set-Cookie"]
    assert "Strict-Transport-Security" not in flask_app.test_client().get("/login").headers  # plain HTTP


def test_passwords_are_never_logged(
    app: tuple[Flask, RecordingBridge, IdentityStore], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = app[0].test_client()
    log_in(client, "vera", SECRET + "-typo")
    log_in(client, SECRET, SECRET)  # a password typed into the username field
    log_in(client, "vera", SECRET)
    assert caplog.records and "failed login" in caplog.text
    assert SECRET not in caplog.text


def test_security_headers_on_every_kind_of_answer(app: tuple[Flask, RecordingBridge, IdentityStore]) -> None:
    client = app[0].test_client()
    log_in(client, "vera", SECRET)
    for path in ("/login", "/", f"/farms/{FARM}", "/farms/nope", "/static/app.js", "/events?farm=Bad..Id"):
        response = client.get(path)
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp, path
        assert response.headers["X-Frame-Options"] == "DENY", path
        assert response.headers["X-Content-Type-Options"] == "nosniff", path
    for page in TEMPLATES.glob("*.html"):  # so the CSP needs no 'unsafe-inline'
        text = page.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text) and not re.search(r"\son[a-z]+=", text), page


def test_login_redirects_only_within_the_site(app: tuple[Flask, RecordingBridge, IdentityStore]) -> None:
    flask_app = app[0]
    for target, expected in (("/farms/x", "/farms/x"), ("//evil.example", "/"), ("/\\evil.example", "/"),
                             ("https://evil.example", "/"), ("/%09/evil.example", "/"), ("/%2F/evil.example", "/"),
                             ("/x%0D%0ASet-Cookie:%20a=b", "/"), ("/%0A/evil.example", "/"),
                             ("%20//evil.example", "/"), ("/farms/x?range=7d", "/farms/x?range=7d")):
        client = flask_app.test_client()
        response = client.post(f"/login?next={target}", data={
            "username": "vera", "password": SECRET, "csrf_token": csrf_token(client)})
        assert response.status_code == 302 and response.headers["Location"] == expected, target


BROWSER_DROPS = re.compile(r"[\t\n\r]")  # what the URL standard removes from a URL before parsing it


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=40), st.text(alphabet="/\\:.%@?#\t\n\r \x00evil", max_size=20),
                 st.builds("/{}".format, st.text(max_size=30))))
def test_a_kept_redirect_target_stays_on_the_site_as_a_browser_reads_it(target: str) -> None:
    kept = local_target(target)
    assert kept in (target, "/")
    resolved = urllib.parse.urlsplit(urllib.parse.urljoin("https://farm.example/", BROWSER_DROPS.sub("", kept)))
    assert resolved.netloc == "farm.example" and resolved.scheme == "https"
    assert "\\" not in kept and not kept.startswith("//") and kept.isascii() and kept.isprintable()


def test_trusted_proxies_come_from_the_environment_and_a_bad_one_is_named() -> None:
    env = {"KUBMESH_TRUSTED_PROXIES": "127.0.0.1, ::1,100.64.0.0/10"}
    assert load_settings(WebSettings, env=env).trusted_proxies == ["127.0.0.1", "::1", "100.64.0.0/10"]
    with pytest.raises(ConfigError, match=r"KUBMESH_TRUSTED_PROXIES.*'proxy\.example' is not an address"):
        load_settings(WebSettings, env={"KUBMESH_TRUSTED_PROXIES": "127.0.0.1,proxy.example"})
