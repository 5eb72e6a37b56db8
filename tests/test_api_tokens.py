"""REST API tokens: issued per user or service by ``kubmesh token add``, stored hashed, scoped by owner."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.identities import Role
from contract.payloads import DeviceInfo, Meta, ProfileSummary, Status, encode, utc_now
from tests.helpers import REPO, wait_until
from tests.test_discovery import TOKEN, Discovery, farm_client, start_discovery


def kubmesh(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kubmesh", *args, "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=30, cwd=REPO)


def issue(data_dir: Path, username: str) -> str:
    result = kubmesh(data_dir, "token", "add", username, "--json")
    assert result.returncode == 0, result.stderr
    return str(json.loads(result.stdout)["token"])


def announce(node: Discovery, farm_id: str, owner: str, declared_owner: str) -> None:
    client = farm_client(node.mqtt_port, node.store.add(farm_id, Role.FARM, owner=owner))
    try:
        for kind, payload in (
            ("status", encode(Status(state="online", ts=utc_now()))),
            ("meta", encode(Meta(farm_id=farm_id, name=farm_id, owner_id=declared_owner,
                                 device=DeviceInfo(model="KUB-1063"), agent_version="test", poll_interval_s=5,
                                 profile=ProfileSummary(name="KUB-1063", values=[]), ts=utc_now()))),
        ):
            client.publish(f"kub/farms/{farm_id}/{kind}", payload, qos=1, retain=True).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.fixture
def node(tmp_path: Path, data_dir: Path) -> Iterator[Discovery]:
    discovery = start_discovery(tmp_path, data_dir)
    wait_until(lambda: discovery.get("/health")[1]["broker"] == "connected", 10, what="discovery connected")
    announce(discovery, "farm-a1", "owner-a", "owner-a")
    announce(discovery, "farm-b1", "owner-b", "owner-a")  # a box that claims another owner convinces nobody
    wait_until(lambda: len(discovery.get("/api/farms")[1]["farms"]) == 2, 10, what="both farms registered")
    yield discovery
    discovery.process.stop()


def farm_ids(node: Discovery, token: str, query: str = "") -> list[str]:
    status, body = node.get(f"/api/farms{query}", token=token)
    assert status == 200, body
    return [farm["farm_id"] for farm in body["farms"]]


def test_an_owner_scoped_token_sees_only_its_owners_farms(node: Discovery, data_dir: Path) -> None:
    node.store.add("anna", Role.VIEWER, owner="owner-a")
    anna = issue(data_dir, "anna")
    assert farm_ids(node, anna) == ["farm-a1"]
    assert farm_ids(node, anna, "?owner=owner-b") == []
    assert node.get("/api/farms/farm-a1", token=anna)[0] == 200
    for path in ("/api/farms/farm-b1", "/api/farms/farm-b1/commands", "/api/farms/farm-b1/history?name=co2"):
        assert node.get(path, token=anna) == (403, {"error": "forbidden", "detail": "the farm of another owner"})
    assert node.get("/api/tailnet/devices", token=anna)[0] == 403  # the whole tailnet is not one owner's


@pytest.mark.parametrize(("role", "owner"), [(Role.ADMIN, "owner-a"), (Role.VIEWER, None), (Role.MOBILE_WEB, None)])
def test_admins_and_unscoped_identities_see_every_farm(
    node: Discovery, data_dir: Path, role: Role, owner: str | None
) -> None:
    node.store.add("someone", role, owner=owner)
    token = issue(data_dir, "someone")
    assert farm_ids(node, token) == ["farm-a1", "farm-b1"]
    assert node.get("/api/farms/farm-b1", token=token)[0] == 200
    assert node.get("/api/tailnet/devices", token=token)[0] == 200
    assert farm_ids(node, TOKEN) == ["farm-a1", "farm-b1"]  # the static API_TOKEN


def test_bad_revoked_and_orphaned_tokens_answer_401(node: Discovery, data_dir: Path) -> None:
    node.store.add("olga", Role.OPERATOR)
    token = issue(data_dir, "olga")
    assert node.get("/api/farms", token=token)[0] == 200
    prefix, token_id, secret = token.split("_")
    forged = f"{prefix}_{token_id}_{'0' * len(secret)}"
    for bad in (forged, f"{prefix}_nosuchid_{secret}", secret, "kmt__", TOKEN + "x", "Bearer " + token):
        assert node.get("/api/farms", token=bad)[0] == 401, bad
    assert "secret_hash" not in kubmesh(data_dir, "token", "list", "--json").stdout
    assert kubmesh(data_dir, "token", "remove", token_id).returncode == 0
    assert node.get("/api/farms", token=token)[0] == 401
    second = issue(data_dir, "olga")
    assert kubmesh(data_dir, "user", "remove", "olga").returncode == 0
    assert node.get("/api/farms", token=second)[0] == 401
    assert kubmesh(data_dir, "token", "add", "farm-a1").returncode != 0  # farms use MQTT only
    assert token not in (data_dir / "identities.json").read_text() and secret not in node.process.output()
