"""``kubmesh demo`` as a user runs it: real processes, real mosquitto clients, real HTTP."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import REPO, MqttWatcher, free_consecutive_ports, free_port, wait_until

FARMS = ("farm-001", "farm-002", "farm-003", "farm-004")  # a site of three houses (001, 003, 004) and a greenhouse


@pytest.fixture
def demo(tmp_path: Path):
    ports = {name: free_port() for name in ("mqtt", "api", "web")}
    # the demo numbers the per-farm ports from a first one
    ports.update({name: free_consecutive_ports(len(FARMS)) for name in ("agent", "modbus", "control")})
    data_dir = tmp_path / "demo"
    log = open(tmp_path / "demo.log", "wb")  # noqa: SIM115 - closed after the demo stops
    process = subprocess.Popen(
        [sys.executable, "-m", "kubmesh", "demo", "--data-dir", str(data_dir),
         "--mqtt-port", str(ports["mqtt"]), "--api-port", str(ports["api"]), "--web-port", str(ports["web"]),
         "--agent-port", str(ports["agent"]), "--modbus-port", str(ports["modbus"]),
         "--control-port", str(ports["control"]), "--poll-interval", "1"],
        stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
    )
    credentials_file = data_dir / "credentials.json"

    def output() -> str:
        log.flush()
        return (tmp_path / "demo.log").read_text(errors="replace")

    try:
        wait_until(lambda: credentials_file.exists() or process.poll() is not None, 60, what="demo start")
        assert process.poll() is None, output()
        yield process, ports, json.loads(credentials_file.read_text()), output
    finally:
        if process.poll() is None:
            process.terminate()  # the demo stops its children in order
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()


def test_demo_runs_whole_system_and_stops_cleanly(demo) -> None:
    process, ports, credentials, output = demo
    assert set(credentials) == {"mqtt", "web", "api"}
    assert set(credentials["mqtt"]) == {"admin", "viewer"}
    admin = credentials["mqtt"]["admin"]

    watcher = MqttWatcher(ports["mqtt"], admin["username"], admin["password"], "kub/#")
    try:
        for farm in FARMS:
            wait_until(lambda f=farm: (watcher.last(f"kub/farms/{f}/status") or {}).get("state") == "online",
                       10, what=f"{farm} online")
            wait_until(lambda f=farm: watcher.last(f"kub/farms/{f}/meta"), 10, what=f"{farm} meta")
            state = wait_until(lambda f=farm: watcher.last(f"kub/farms/{f}/state"), 10, what=f"{farm} state")
            assert {"temp_inside", "humidity", "co2"} <= set(state["values"])
        first_seq = watcher.last("kub/farms/farm-001/state")["seq"]
        wait_until(lambda: watcher.last("kub/farms/farm-001/state")["seq"] > first_seq, 5, what="a fresh state")

        anonymous = subprocess.run(
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(ports["mqtt"]), "-t", "kub/#", "-C", "1", "-W", "3"],
            capture_output=True, text=True, timeout=10,
        )
        assert anonymous.returncode != 0 and "not authori" in anonymous.stderr.lower()

        api = f"http://127.0.0.1:{ports['api']}/api/farms"
        request = urllib.request.Request(api, headers={"Authorization": f"Bearer {credentials['api']['token']}"})
        farms = json.load(urllib.request.urlopen(request, timeout=5))["farms"]
        assert {f["farm_id"]: f["online"] for f in farms} == dict.fromkeys(FARMS, True)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(api, timeout=5)
        assert refused.value.code == 401
        assert json.load(refused.value)["error"]

        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0, output()
        assert time.monotonic() - started < 10
        for farm in FARMS:
            assert watcher.last(f"kub/farms/{farm}/status")["state"] == "offline"
    finally:
        watcher.close()
