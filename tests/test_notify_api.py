"""``/api/notify/{user}``: a user's notification settings through the discovery API — their own for a token
acting for them, anyone's for an admin and for the static token (the mobile web's); another user's is
403; a bad channel or half quiet hours answers 400 and changes nothing."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.identities import Role
from tests.test_api_tokens import issue
from tests.test_discovery import TOKEN, Discovery, start_discovery


@pytest.fixture
def node(tmp_path: Path, data_dir: Path) -> Iterator[Discovery]:
    node = start_discovery(tmp_path, data_dir)
    for name, role in (("olga", Role.OPERATOR), ("vera", Role.VIEWER), ("ada", Role.ADMIN)):
        node.store.add(name, role, password=f"{name}-password")
    yield node
    node.process.stop()


def call(node: Discovery, method: str, path: str, token: str = TOKEN, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{node.api_port}{path}", data, method=method,
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_settings_are_the_users_own_and_the_admins(node: Discovery, data_dir: Path) -> None:
    olga, vera, ada = issue(data_dir, "olga"), issue(data_dir, "vera"), issue(data_dir, "ada")
    status, mine = call(node, "GET", "/api/notify/olga", olga)
    assert status == 200 and mine["channels"] == [] and mine["language"] == "ru" and mine["webpush_key"]
    assert call(node, "GET", "/api/notify/olga", vera)[0] == 403
    assert call(node, "POST", "/api/notify/olga/channels", vera, {"url": "json://127.0.0.1/x"})[0] == 403
    assert call(node, "GET", "/api/notify/vera", ada)[0] == 200
    assert call(node, "GET", "/api/notify/nobody")[0] == 404
    assert call(node, "GET", "/api/notify/Not%20A%20Name")[0] == 400

    status, added = call(node, "POST", "/api/notify/vera/channels", vera, {"url": "json://127.0.0.1/x",
                                                                         "severity": "critical"})
    assert status == 201 and [c["severity"] for c in added["channels"]] == ["critical"]
    status, patched = call(node, "PATCH", "/api/notify/vera", vera,
                           {"language": "en", "quiet_start": "22:00", "quiet_end": "06:00", "severity": "warning"})
    assert status == 200 and (patched["language"], patched["quiet_start"]) == ("en", "22:00")
    assert [c["severity"] for c in patched["channels"]] == ["warning"]
    status, cleared = call(node, "PATCH", "/api/notify/vera", vera, {"quiet_start": None, "quiet_end": None})
    assert status == 200 and cleared.get("quiet_start") is None and cleared["language"] == "en"


def test_bad_input_answers_400_and_changes_nothing(node: Discovery) -> None:
    for body in ({"url": "nosuch://x"}, {}, {"url": "json://127.0.0.1/x", "webpush": {"endpoint": "https://p/x",
                 "p256dh": "k", "auth": "a"}}, {"webpush": {"endpoint": "ftp://p/x", "p256dh": "k", "auth": "a"}},
                 {"url": "json://127.0.0.1/x", "tier": 3}):
        assert call(node, "POST", "/api/notify/olga/channels", body=body)[0] == 400, body
    assert call(node, "PATCH", "/api/notify/olga", body={"quiet_start": "22:00"})[0] == 400
    assert call(node, "PATCH", "/api/notify/olga", body={"quiet_start": "25:00", "quiet_end": "06:00"})[0] == 400
    assert call(node, "DELETE", "/api/notify/olga/channels?url=json://127.0.0.1/x")[0] == 404
    status, unchanged = call(node, "GET", "/api/notify/olga")
    assert status == 200 and unchanged["channels"] == [] and unchanged.get("quiet_start") is None

    status, pushed = call(node, "POST", "/api/notify/olga/channels",
                          body={"webpush": {"endpoint": "https://push.example/abc", "p256dh": "KEY", "auth": "SECRET"}})
    assert status == 201 and pushed["channels"][0]["url"] == "webpush+https://push.example/abc"  # no keys shown
    assert call(node, "DELETE", "/api/notify/olga/channels?url=webpush%2Bhttps://push.example/abc")[0] == 200
