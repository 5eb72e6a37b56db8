"""``kubmesh doctor`` against a running discovery node, simulator and stand-in tailscale, then a stopped broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.identities import Role
from contract.payloads import utc_now
from discovery.alerting.kinds import Severity
from discovery.alerting.store import opened_alert_store
from discovery.postgres.migrate import migrations
from discovery.settings import DiscoverySettings
from discovery.storage import opened_storage
from tests.farm_system import Simulator
from tests.helpers import REPO, free_port, wait_until
from tests.tailscale_api import FIXTURES, STANDIN_BIN
from tests.test_discovery import start_discovery

FARM = "farm-001"


def doctor(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kubmesh", "doctor", *args], capture_output=True, text=True,
                          timeout=60, cwd=REPO, env={**os.environ, **(env or {})})


def lines(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """check name -> status, from lines like ``ok    broker reachable   127.0.0.1:1883``."""
    found = {}
    for line in result.stdout.splitlines()[:-1]:
        status, rest = line.split(None, 1)
        name = rest.split("  ")[0].strip()
        found[name] = status
    return found


@pytest.fixture
def tailscale_as(tmp_path: Path) -> dict[str, str]:
    """The stand-in tailscale on PATH, its node tagged tag:farm."""
    status = json.loads((FIXTURES / "status.json").read_text())
    status["Self"]["Tags"] = ["tag:farm"]
    status["Self"]["DNSName"] = "farm-001.example.ts.net."
    path = tmp_path / "farm-status.json"
    path.write_text(json.dumps(status))
    return {"PATH": f"{STANDIN_BIN}{os.pathsep}{os.environ['PATH']}", "TAILSCALE_STATUS_FILE": str(path)}


def test_doctor_passes_every_check_on_a_healthy_farm_node_and_fails_clearly_without_its_broker(
    simulator: Simulator, tmp_path: Path, data_dir: Path, tailscale_as: dict[str, str]
) -> None:
    discovery = start_discovery(tmp_path, data_dir)
    credentials = discovery.store.add(FARM, Role.FARM, owner="ivan")
    wait_until(lambda: discovery.get("/health")[1]["broker"] == "connected", 10, what="discovery connected")
    base = ["--farm-id", FARM, "--modbus-url", simulator.modbus_url, "--data-dir", str(tmp_path / "farm"),
            "--discovery-url", f"http://127.0.0.1:{discovery.api_port}"]
    url = f"mqtt://{FARM}:{credentials.password}@127.0.0.1:{discovery.mqtt_port}"
    try:
        healthy = doctor(*base, "--mqtt-url", url, env=tailscale_as)
        assert healthy.returncode == 0, healthy.stdout + healthy.stderr
        assert lines(healthy) == {"python": "ok", "config": "ok", "broker reachable": "ok", "broker credentials": "ok",
                                  "Modbus": "ok", "discovery API": "ok", "tailscale": "ok", "clock": "ok",
                                  "disk": "ok"}
        assert "KUB-1063 firmware" in healthy.stdout and "tagged tag:farm" in healthy.stdout
        assert healthy.stdout.splitlines()[-1] == "9 of 9 checks passed"
        in_venv = sys.prefix != sys.base_prefix
        assert ("in the virtual environment " + sys.prefix if in_venv else sys.executable) in healthy.stdout

        wrong = doctor(*base, "--mqtt-url", url.replace(credentials.password, "wrong"), env=tailscale_as)
        assert wrong.returncode == 1 and lines(wrong)["broker credentials"] == "FAIL"
        untagged = doctor(*base, "--mqtt-url", url, env={**tailscale_as, "TAILSCALE_STATUS_FILE": ""})
        assert lines(untagged)["tailscale"] == "FAIL" and "not tagged tag:farm" in untagged.stdout
    finally:
        discovery.process.stop()
    stopped = doctor(*base, "--mqtt-url", url, env=tailscale_as)
    assert stopped.returncode == 1
    assert lines(stopped)["broker reachable"] == "FAIL" and lines(stopped)["broker credentials"] == "skip"
    assert f"127.0.0.1:{discovery.mqtt_port}" in stopped.stdout
    assert stopped.stdout.splitlines()[-1].endswith("failed: broker reachable, discovery API")
    simulator.stop()
    no_modbus = doctor(*base, "--mqtt-url", url, env=tailscale_as)
    assert lines(no_modbus)["Modbus"] == "FAIL" and "Traceback" not in no_modbus.stderr


def test_doctor_names_a_bad_config_and_checks_a_discovery_node(tmp_path: Path, data_dir: Path) -> None:
    config = tmp_path / "farm_config.yaml"
    config.write_text("farm:\n  id: Not/Valid\n")
    bad = doctor("--config", str(config), "--data-dir", str(data_dir))
    assert bad.returncode == 1 and lines(bad)["config"] == "FAIL" and "farm.id" in bad.stdout
    discovery = start_discovery(tmp_path, data_dir)
    discovery.store.add(FARM, Role.FARM, owner="ivan")
    try:
        env = {"MQTT_PORT": str(discovery.mqtt_port), "KUBMESH_API_PORT": str(discovery.api_port),
               "PATH": f"{STANDIN_BIN}{os.pathsep}{os.environ['PATH']}"}
        node = doctor("--data-dir", str(data_dir), env=env)
        assert node.returncode == 0, node.stdout
        assert lines(node) == {"python": "ok", "config": "ok", "broker reachable": "ok", "broker identities": "ok",
                               "database": "ok", "discovery API": "ok", "alert channels": "skip", "tailscale": "ok",
                               "clock": "ok", "disk": "ok"}
    finally:
        discovery.process.stop()


def test_doctor_checks_the_postgresql_of_a_discovery_node_and_fails_clearly_without_it(
        tmp_path: Path, data_dir: Path, postgres_url: str) -> None:
    env = {"DATABASE_URL": postgres_url, "MQTT_PORT": str(free_port()), "KUBMESH_API_PORT": str(free_port())}
    found = doctor("--data-dir", str(data_dir), env=env)
    assert lines(found)["database"] == "ok", found.stdout
    assert "postgresql 15" in found.stdout
    assert f"version 0 of {len(migrations())}, migrated when the node starts" in found.stdout
    assert lines(found)["alert channels"] == "skip"  # nothing made by the doctor: the node migrates
    with opened_storage(DiscoverySettings(data_dir=data_dir, database_url=postgres_url)) as storage, \
            opened_alert_store(storage) as store:
        store.add_channel("farmer", "json://127.0.0.1:9/x", Severity.WARNING, 1)
        store.channel_result("farmer", "json://127.0.0.1:9/x", False, "refused", utc_now())
    shared = doctor("--data-dir", str(data_dir), env=env)
    assert lines(shared)["alert channels"] == "FAIL" and "farmer" in shared.stdout and "refused" in shared.stdout
    gone = postgres_url.rsplit(":", 1)[0] + f":{free_port()}/nothing"
    missing = doctor("--data-dir", str(data_dir), env={**env, "DATABASE_URL": gone})
    assert missing.returncode == 1 and lines(missing)["database"] == "FAIL"
    assert "connection" in missing.stdout.lower() and "database" in missing.stdout
