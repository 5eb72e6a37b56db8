"""The mobile web's optional tailnet identity check, with the stand-in tailscale CLI answering whois."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flask import Flask

from mobile_web.app import create_app
from mobile_web.settings import WebSettings
from tests.tailscale_api import FIXTURES, STANDIN_BIN

PHONE = "100.64.0.23"


def app(data_dir: Path, enabled: bool = True) -> Flask:
    settings = WebSettings(data_dir=data_dir, tailnet_whois=enabled, tailscale_cli=str(STANDIN_BIN / "tailscale"))
    return create_app(settings)


def get(web: Flask, address: str, path: str = "/login") -> tuple[int, dict[str, str]]:
    status, headers, _ = answer(web, address, path)
    return status, headers


def answer(web: Flask, address: str, path: str = "/login") -> tuple[int, dict[str, str], str]:
    response = web.test_client().get(path, environ_base={"REMOTE_ADDR": address})
    return response.status_code, dict(response.headers), response.get_data(as_text=True)


def test_a_phone_on_the_tailnet_is_served_and_named(data_dir: Path) -> None:
    status, headers = get(app(data_dir), PHONE)
    assert status == 200 and headers["X-Tailnet-User"] == "user1@example.com"


def test_a_farm_device_gets_403(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    who = json.loads((FIXTURES / "whois.json").read_text())
    who["Node"]["Tags"] = ["tag:farm"]
    who["Node"]["Name"] = "farm-001.example.ts.net."
    (tmp_path / "farm-whois.json").write_text(json.dumps(who))
    monkeypatch.setenv("TAILSCALE_WHOIS_FILE", str(tmp_path / "farm-whois.json"))
    status, headers, body = answer(app(data_dir), "100.64.0.11")
    assert status == 403 and "X-Tailnet-User" not in headers
    assert "tag:farm" in body  # refused for its tag, not because whois failed


def test_an_address_off_the_tailnet_gets_403_and_the_machine_itself_passes(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    web = app(data_dir)
    monkeypatch.setenv("TAILSCALE_DOWN", "1")
    assert get(web, "192.0.2.10")[0] == 403
    status, headers = get(web, "127.0.0.1")
    assert status == 200 and "X-Tailnet-User" not in headers


def test_off_by_default(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAILSCALE_DOWN", "1")
    assert WebSettings().tailnet_whois is False
    assert get(app(data_dir, enabled=False), "192.0.2.10")[0] == 200
