"""deploy/: the systemd units and the Compose file run real kubmesh commands with the hardening they promise.

Docker cannot run here, so the Compose file and the Dockerfile are checked for structure; the units are
also checked by ``systemd-analyze verify`` when it is installed.
"""

from __future__ import annotations

import configparser
import json
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from common.settings import ServiceSettings
from discovery.settings import DiscoverySettings
from farm_agent.settings import AgentSettings
from kubmesh.cli import build_parser
from mobile_web.settings import WebSettings
from tests.helpers import REPO, ServiceProcess, free_port

DEPLOY = REPO / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
CONTRACT_PORTS = {1883, 8883, 8082, 8080, 5000}
SETTINGS = {"discovery": DiscoverySettings, "farm-agent": AgentSettings, "mobile-web": WebSettings}


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


def kubmesh_args(command: list[str]) -> list[str]:
    parsed = build_parser().parse_args(command)
    assert parsed.func is not None
    return command


def test_every_service_has_a_unit() -> None:
    assert {p.name for p in UNITS} == {"kubmesh-discovery.service", "kubmesh-agent@.service",
                                       "kubmesh-mobile-web.service"}


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_units_restart_run_hardened_and_start_a_real_command(path: Path) -> None:
    service = unit(path)["Service"]
    assert service["Restart"] in ("always", "on-failure") and float(service["RestartSec"]) > 0
    assert service["RestartPreventExitStatus"] == "2"  # a configuration error is not retried forever
    assert service["User"] == "kubmesh"
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                       "PrivateTmp": "yes", "CapabilityBoundingSet": ""}.items():
        assert service[key] == value, key
    command = shlex.split(service["ExecStart"].replace("%i", "farm-001"))
    assert command[0].endswith("/kubmesh") and "--log-json" in command
    kubmesh_args(command[1:])
    if path.name.startswith("kubmesh-agent@"):
        assert service["SupplementaryGroups"] == "dialout" and "PrivateDevices" not in service
        assert service["DevicePolicy"] == "closed"
    else:
        assert service["PrivateDevices"] == "yes"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_every_directive(tmp_path: Path) -> None:
    names = []
    for path in UNITS:
        text = path.read_text().replace("/opt/kubmesh/bin/kubmesh", shutil.which("python3") or "/usr/bin/python3")
        name = path.name.replace("@.service", "@farm-001.service")
        (tmp_path / path.name).write_text(text)
        (tmp_path / name).write_text(text)
        names.append(str(tmp_path / name))
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", *names], capture_output=True, text=True,
                            timeout=60, env={"SYSTEMD_LOG_LEVEL": "warning", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_compose_runs_each_service_with_known_settings_ports_and_health() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == set(SETTINGS)
    for name, service in services.items():
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).exists()
        assert service["restart"] == "unless-stopped" and service["read_only"] is True
        assert "no-new-privileges:true" in service["security_opt"] and service["cap_drop"] == ["ALL"]
        command = kubmesh_args(service["command"])
        assert command[0] == name and "--log-json" in command
        model: type[ServiceSettings] = SETTINGS[name]
        known = {**ServiceSettings.ENV, **model.ENV}
        for variable in service.get("environment", {}):
            assert variable in known, f"{name}: {variable} is not read by {model.__name__}"
        ports = {int(mapping.split(":")[-1]) for mapping in service["ports"]}
        assert ports <= CONTRACT_PORTS, ports
        assert service["healthcheck"]["test"][0] == "CMD"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source in compose["volumes"] or source.startswith("./"), volume
    assert "dialout" in services["farm-agent"]["group_add"] and services["farm-agent"]["devices"]


def test_the_image_exposes_the_contract_ports_and_runs_kubmesh() -> None:
    lines = [line.split(None, 1) for line in (DEPLOY / "Dockerfile").read_text().splitlines()
             if line and not line.startswith("#")]
    instructions: dict[str, list[str]] = {}
    for instruction, argument in lines:
        instructions.setdefault(instruction, []).append(argument)
    assert {int(p) for p in instructions["EXPOSE"][0].split()} == CONTRACT_PORTS
    assert instructions["ENTRYPOINT"] == ['["kubmesh"]'] and instructions["USER"] == ["kubmesh"]
    for copy in instructions["COPY"]:
        for source in copy.split()[:-1]:
            assert (REPO / source).exists(), source
    copied = {source for copy in instructions["COPY"] for source in copy.split()[:-1]}
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert {pattern.rstrip("*") for pattern in packages["include"]} <= copied  # pip install . needs every one


def test_log_json_writes_one_json_object_per_line(tmp_path: Path) -> None:
    port = free_port()
    process = ServiceProcess(["broker", "--data-dir", str(tmp_path), "--mqtt-host", "127.0.0.1", "--mqtt-port",
                              str(port), "--log-json"], tmp_path / "broker.log").wait_port(port)
    assert process.stop() == 0
    entries = [json.loads(line) for line in (tmp_path / "broker.log").read_text().splitlines() if line.strip()]
    assert entries and all({"ts", "level", "logger", "message"} <= set(e) for e in entries)
    assert any("listening" in e["message"] for e in entries)


def test_the_two_node_compose_runs_two_discovery_nodes_on_one_broker_and_one_database() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.two-nodes.yml").read_text())
    nodes = {name: service for name, service in compose["services"].items() if name.startswith("discovery-")}
    assert len(nodes) == 2
    known = {**ServiceSettings.ENV, **DiscoverySettings.ENV}
    environments = [node["environment"] for node in nodes.values()]
    for node, environment in zip(nodes.values(), environments, strict=True):
        assert kubmesh_args(node["command"])[0] == "discovery" and set(environment) <= set(known)
        assert node["read_only"] is True and node["cap_drop"] == ["ALL"]
    assert len({environment["NODE_NAME"] for environment in environments}) == 2  # a client id each
    for shared in ("DATABASE_URL", "MQTT_URL"):
        assert len({environment[shared] for environment in environments}) == 1
    assert environments[0]["DATABASE_URL"].startswith("postgresql://")
    assert {"postgres", "mosquitto"} <= set(compose["services"])
