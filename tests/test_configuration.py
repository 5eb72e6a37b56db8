"""Configuration and device profiles: bad ones stop a service at start with the file, the key and why."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from common.settings import ConfigError, load_settings
from farm_agent.profile import ProfileError, load_profile, parse_profile
from farm_agent.settings import AgentSettings
from tests.helpers import REPO

SHIPPED = (REPO / "farm_agent" / "profiles" / "kub1063.yaml").read_text(encoding="utf-8")


def kubmesh(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kubmesh", *args], capture_output=True, text=True, timeout=30,
                          cwd=REPO, env=env)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("scale: 0.1, unit: Pa", "scale: ten, unit: Pa"), "values[2] (pressure).scale"),
        (lambda t: t.replace("min: -720, max: 840, ", ""), "timezone_minutes"),
        (lambda t: t.replace("name: co2,", "name: humidity,"), "names used twice: humidity"),
        (lambda t: t.replace("model: KUB-1063", "model: KUB-1063\nsurprise: 1"), "surprise"),
        (lambda t: t.replace("kind: alarm, latched: false}", "kind: alarm, latched: false, labels: {64: x}}"),
         "alarm_groups[0] (active_alarms).labels"),
        (lambda t: t.replace("values:", "values: [", 1), "not valid YAML"),
    ],
)
def test_a_broken_profile_names_the_key_and_the_reason(edit, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ProfileError) as error:
        parse_profile(edit(SHIPPED), "my-profile.yaml")
    assert str(error.value).startswith("my-profile.yaml: ") and message in str(error.value)


def test_the_agent_refuses_to_start_with_a_broken_profile(tmp_path: Path) -> None:
    profile = tmp_path / "kub.yaml"
    profile.write_text(SHIPPED.replace("type: s16, scale: 0.1", "type: s32, scale: 0.1", 1))
    result = kubmesh("farm-agent", "--farm-id", "farm-1", "--profile", str(profile), "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert f"{profile}: values[14] (temp_target).type" in result.stderr
    assert "Traceback" not in result.stderr
    assert load_profile(str(REPO / "farm_agent" / "profiles" / "kub1063.yaml")).model == "KUB-1063"


def test_the_owners_farm_config_and_variables_work(tmp_path: Path) -> None:
    config = tmp_path / "farm_config.yaml"
    config.write_text(
        'farm:\n  id: "farm-kub1063-001"\n  name: "Ферма КУБ-1063 Теплица №1"\n  owner_id: "user_farmer1"\n'
        '  location: "greenhouse-1"\n  capabilities: ["kub1063", "monitoring", "control"]\n  api_port: 8080\n'
        'tailscale:\n  tailnet: "your-company.ts.net"\n  api_key: "tskey-api-xxxx"\n'
        'discovery:\n  service_url: "http://discovery:8082"\n  heartbeat_interval: 300\n',
        encoding="utf-8",
    )
    settings = load_settings(AgentSettings, config_file=config, env={"POLL_INTERVAL": "2"}, flags={"api_port": 9090})
    assert settings.farm_id == "farm-kub1063-001" and settings.farm_name == "Ферма КУБ-1063 Теплица №1"
    assert (settings.heartbeat_interval, settings.poll_interval, settings.api_port) == (300, 2, 9090)
    from_env = load_settings(AgentSettings, config_file=config, env={"FARM_ID": "farm-9"})
    assert from_env.farm_id == "farm-9"  # environment over file


@pytest.mark.parametrize(
    ("content", "env", "message"),
    [
        ("farm: [unclosed", {}, "not valid YAML"),
        ("farm:\n  id: Bad/Id\n", {}, "key 'farm.id'"),
        ("farm:\n  id: farm-1\n  colour: red\n", {}, "unknown key 'farm.colour'"),
        ("farm:\n  id: farm-1\n", {"POLL_INTERVAL": "soon"}, "environment variable POLL_INTERVAL"),
        ("farm:\n  id: farm-1\n", {"MODBUS_URL": "serial://x"}, "environment variable MODBUS_URL"),
        ("- just\n- a list\n", {}, "mapping"),
    ],
)
def test_bad_configuration_names_the_key_and_where_it_came_from(
    tmp_path: Path, content: str, env: dict[str, str], message: str
) -> None:
    config = tmp_path / "farm_config.yaml"
    config.write_text(content)
    with pytest.raises(ConfigError) as error:
        load_settings(AgentSettings, config_file=config, env=env)
    assert message in str(error.value)


def test_a_service_with_a_corrupt_config_exits_with_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_bytes(b"port: [8082\n\xff")
    result = kubmesh("discovery", "--config", str(config), "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert "configuration error" in result.stderr and str(config) in result.stderr
    assert "Traceback" not in result.stderr
