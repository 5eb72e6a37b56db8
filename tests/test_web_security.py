"""The mobile web's doors: roles, owner scope, cookies, CSRF, login throttling, logs and headers."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from common.identities import IdentityStore, Role
from mobile_web.app import create_app
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
    yield create_app(WebSettings(data_dir=data_dir, login_limit="5 per minute"), bridge), bridge, store


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


def test_failed_logins_are_throttled_per_account_and_per_address(
    app: tuple[Flask, RecordingBridge, IdentityStore],
) -> None:
    flask_app = app[0]

    def attempt(address: str, username: str, password: str = "wrong") -> tuple[int, str | None]:
        client = flask_app.test_client()
        client.environ_base["REMOTE_ADDR"] = address
        response = log_in(client, username, password)
        return response.status_code, response.headers.get("Retry-After")

    for index in range(5):  # one account from five addresses
        assert attempt(f"10.0.0.{index + 1}", "vera")[0] == 401
    status, retry_after = attempt("10.0.0.99", "vera", SECRET)
    assert status == 429 and retry_after and int(retry_after) > 0
    for name in ("a1", "a2", "a3", "a4", "a5"):  # five accounts from one address
        assert attempt("10.1.1.1", name)[0] == 401
    assert attempt("10.1.1.1", "olga", SECRET)[0] == 429
    assert attempt("10.2.2.2", "olga", SECRET)[0] == 302  # others go on


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
                             ("https://evil.example", "/")):
        client = flask_app.test_client()
        response = client.post(f"/login?next={target}", data={
            "username": "vera", "password": SECRET, "csrf_token": csrf_token(client)})
        assert response.headers["Location"] == expected, target
