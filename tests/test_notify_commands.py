"""``kubmesh notify add|list|remove|test`` as a farmer runs them, and the rules file's checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from common.identities import IdentityStore, Role
from discovery.alerting.rules import DEFAULT_RULES_FILE, RulesError, load_rules
from tests.alert_receivers import HttpReceiver
from tests.helpers import REPO, free_port


def kubmesh(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kubmesh", "notify", *args, "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=60, cwd=REPO, env={**os.environ, **(env or {})})


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    server = HttpReceiver().start()
    yield server
    server.stop()


def test_add_list_test_and_remove_a_channel(data_dir: Path, receiver: HttpReceiver,
                                            database_env: dict[str, str]) -> None:
    """On SQLite (alerts.db in the data dir) and on the PostgreSQL that DATABASE_URL names (nothing in the data dir)."""
    IdentityStore(data_dir).add("farmer", Role.OPERATOR, owner="owner-a", password="pw-farmer-1")
    url = receiver.url("json", "/phone")
    added = kubmesh(data_dir, "add", "farmer", url, "--severity", "critical", "--tier", "2", "--language", "en",
                    "--quiet", "22:00-06:00", env=database_env)
    assert added.returncode == 0, added.stderr
    assert (data_dir / "alerts.db").exists() == (not database_env)
    [row] = json.loads(kubmesh(data_dir, "list", "--json", env=database_env).stdout)
    assert (row["username"], row["tier"], row["severity"], row["language"], row["state"]) == (
        "farmer", 2, "critical", "en", "ok")

    tested = kubmesh(data_dir, "test", "farmer", env=database_env)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    [request] = receiver.on("/phone")
    assert "test of your kubmesh alert channel" in request.json()["message"]

    assert kubmesh(data_dir, "remove", "farmer", url, env=database_env).returncode == 0
    assert json.loads(kubmesh(data_dir, "list", "--json", env=database_env).stdout) == []
    assert kubmesh(data_dir, "remove", "farmer", url, env=database_env).returncode == 1


def test_a_failing_channel_fails_the_test_and_shows_as_failing(data_dir: Path, receiver: HttpReceiver) -> None:
    IdentityStore(data_dir).add("farmer", Role.OPERATOR, password="pw-farmer-1")
    good, dead = receiver.url("json", "/ok"), f"json://127.0.0.1:{free_port()}/dead"
    for url in (good, dead):
        assert kubmesh(data_dir, "add", "farmer", url).returncode == 0
    tested = kubmesh(data_dir, "test", "farmer")
    assert tested.returncode == 1
    assert "FAILED json://127.0.0.1" in tested.stdout and "ok     json://127.0.0.1" in tested.stdout
    states = {row["url"].split("?")[0]: row["state"] for row in json.loads(kubmesh(data_dir, "list", "--json").stdout)}
    assert sorted(states.values()) == ["failing", "ok"]
    assert "FAILING" in kubmesh(data_dir, "list", "farmer").stdout
    doctor = subprocess.run([sys.executable, "-m", "kubmesh", "doctor", "--data-dir", str(data_dir)],
                            capture_output=True, text=True, timeout=60, cwd=REPO)
    [line] = [line for line in doctor.stdout.splitlines() if line.split()[1:3] == ["alert", "channels"]]
    assert line.startswith("FAIL") and "farmer json://127.0.0.1" in line and doctor.returncode == 1


@pytest.mark.parametrize(("args", "reason"), [
    (["nobody", "json://127.0.0.1/x"], "no user 'nobody'"),
    (["farmer", "nosuch://x"], "not a channel URL"),
    (["farmer", "json://127.0.0.1/x", "--quiet", "late"], "quiet hours are HH:MM-HH:MM"),
])
def test_bad_input_is_refused_with_the_reason_and_changes_nothing(data_dir: Path, args: list[str],
                                                                  reason: str) -> None:
    IdentityStore(data_dir).add("farmer", Role.OPERATOR, password="pw-farmer-1")
    result = kubmesh(data_dir, "add", *args)
    assert result.returncode == 1 and reason in result.stderr
    assert json.loads(kubmesh(data_dir, "list", "--json").stdout) == []


def test_the_shipped_rules_watch_values_the_kub1063_profile_has() -> None:
    book = load_rules()
    profile = yaml.safe_load((REPO / "farm_agent" / "profiles" / "kub1063.yaml").read_text(encoding="utf-8"))
    names = {value["name"] for value in profile["values"]}
    for rule in book.rules:
        assert rule.value in names and (rule.relative_to is None or rule.relative_to in names), rule.name
        assert rule.reason, f"{rule.name} says why its limit"
    assert DEFAULT_RULES_FILE.name in book.source


@pytest.mark.parametrize(("text", "reason"), [
    ("rules: [{name: hot, value: temp_inside}]", "exactly one of above, below or rate_per_hour"),
    ("rules: [{name: hot, value: temp_inside, above: 30, colour: red}]", "rules.0.colour"),
    ("kinds: {alarm: {severity: loud}}", "kinds.alarm"),
    ("kinds: {meteor: {severity: critical}}", "unknown kind 'meteor'"),
    ("rules: [{name: a, value: co2, above: 1}, {name: a, value: co2, below: 0}]", "unique: a"),
    ("rules: [", "not valid YAML"),
])
def test_a_bad_rules_file_names_the_file_and_the_fault(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RulesError) as raised:
        load_rules(path)
    assert str(path) in str(raised.value) and reason in str(raised.value)


def test_an_operators_rules_file_changes_a_kinds_severity(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("kinds: {sensor_fault: {severity: critical}}\nrules: []\n", encoding="utf-8")
    book = load_rules(path)
    assert book.kinds["sensor_fault"].severity == "critical" and book.rules == ()
