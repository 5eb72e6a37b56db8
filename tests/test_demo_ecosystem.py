"""The demo as Home Assistant and an operator see it: ``mosquitto_sub -t 'homeassistant/#'`` and ``kubmesh doctor``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.ha_schema import check_device_config, check_entity_config
from tests.helpers import REPO, MqttWatcher, wait_until
from tests.test_demo import FARMS, demo  # noqa: F401 - the fixture

CORE_SENSORS = {"temperature", "humidity", "carbon_dioxide", "pressure"}
SITE_CONFIG = "homeassistant/sensor/kubmesh-farm-001/site_poll_cycle/config"


def mosquitto_sub(port: int, admin: dict[str, str], count: int, *extra: str) -> list[tuple[str, str]]:
    result = subprocess.run(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-u", admin["username"], "-P", admin["password"],
         "-t", "homeassistant/#", "-v", "-C", str(count), "-W", "15", *extra],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return [tuple(line.split(" ", 1)) for line in result.stdout.splitlines()]  # type: ignore[misc]


def test_demo_announces_both_farms_to_home_assistant_and_passes_the_doctor(demo: Any, tmp_path: Path) -> None:  # noqa: F811
    _, ports, credentials, output = demo
    admin = credentials["mqtt"]["admin"]
    announced = dict(mosquitto_sub(ports["mqtt"], admin, len(FARMS) + 1))
    # the site's own device, through which its three houses are reached, announced by its first house
    site = check_entity_config(json.loads(announced.pop(SITE_CONFIG)))
    assert site["device"]["name"] == "Агрофирма Север"
    configs = announced
    assert set(configs) == {f"homeassistant/device/kubmesh-{farm}/config" for farm in FARMS}
    for document in configs.values():
        components = check_device_config(json.loads(document))
        core = [c for c in components.values() if c["platform"] == "sensor" and c.get("device_class") in CORE_SENSORS]
        assert len(core) >= 5 and any(c["platform"] in ("button", "number") for c in components.values())

    # Home Assistant's birth message brings the configs again (sent live, not only kept retained)
    watcher = MqttWatcher(ports["mqtt"], admin["username"], admin["password"], "homeassistant/+/+/config")
    try:
        wait_until(watcher.subscribed.is_set, 5, what="subscribed")
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(ports["mqtt"]), "-u", admin["username"],
                        "-P", admin["password"], "-t", "homeassistant/status", "-m", "online", "-q", "1"],
                       check=True, timeout=10)

        def sent_again() -> set[str]:
            with watcher.lock:
                return {topic for topic, _, retained in watcher.messages if not retained}

        wait_until(lambda: sent_again() == set(configs), 15, what="both configs after the birth message")
    finally:
        watcher.close()

    doctor = subprocess.run(
        [sys.executable, "-m", "kubmesh", "doctor", "--farm-id", "farm-001",
         "--mqtt-url", f"mqtt://{admin['username']}:{admin['password']}@127.0.0.1:{ports['mqtt']}",
         "--modbus-url", f"tcp://127.0.0.1:{ports['modbus']}?unit=1",
         "--discovery-url", f"http://127.0.0.1:{ports['api']}", "--data-dir", str(tmp_path / "farm")],
        capture_output=True, text=True, timeout=60, cwd=REPO,
        env={**os.environ, "TAILSCALE_CLI": str(tmp_path / "no-tailscale")},
    )
    assert doctor.returncode == 0, doctor.stdout + output()
    assert "FAIL" not in doctor.stdout and doctor.stdout.splitlines()[-1] == "8 of 9 checks passed, 1 skipped"
