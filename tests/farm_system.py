"""A farm as tests need it: a real simulator process, a real agent process, a broker, and ways to poke them."""

from __future__ import annotations

import json
import math
import urllib.request
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

from common.identities import Credentials
from contract.payloads import Reading, encode, utc_now
from contract.topics import Topics
from tests.helpers import ServiceProcess, free_port, wait_until


def http_json(url: str, body: dict[str, Any] | None = None, timeout: float = 5) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


@dataclass
class Simulator:
    tmp_path: Path
    extra_args: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    control_port: int = field(default_factory=free_port)
    process: ServiceProcess | None = None

    def start(self) -> Simulator:
        self.process = ServiceProcess(
            ["simulate", "--host", "127.0.0.1", "--port", str(self.port),
             "--control-port", str(self.control_port), "--seed", "7", *self.extra_args],
            self.tmp_path / f"simulator-{self.port}.log",
        ).wait_port(self.port)
        wait_until(lambda: self.stats(), 10, what="simulator control API")
        return self

    def stop(self) -> None:
        if self.process:
            self.process.stop()

    def kill(self) -> None:
        if self.process:
            self.process.kill()

    @property
    def modbus_url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}?unit=1&timeout=0.5"

    def control(self, path: str, body: dict[str, Any]) -> Any:
        return http_json(f"http://127.0.0.1:{self.control_port}{path}", body)

    def stats(self) -> dict[str, Any]:
        return http_json(f"http://127.0.0.1:{self.control_port}/stats")  # type: ignore[no-any-return]


@dataclass
class Agent:
    tmp_path: Path
    data_dir: Path
    farm_id: str
    mqtt_url: str
    modbus_url: str
    poll_interval: float = 0.5
    extra_env: dict[str, str] = field(default_factory=dict)
    api_port: int = field(default_factory=free_port)
    process: ServiceProcess | None = None

    def start(self) -> Agent:
        self.process = ServiceProcess(
            ["farm-agent", "--data-dir", str(self.data_dir), "--farm-id", self.farm_id,
             "--modbus-url", self.modbus_url, "--poll-interval", str(self.poll_interval),
             "--host", "127.0.0.1", "--port", str(self.api_port)],
            self.tmp_path / f"agent-{self.farm_id}-{self.api_port}.log",
            # a reading at least every 2 s: tests wait for fresh states, which by exception may not come for a minute
            env={"MQTT_URL": self.mqtt_url, "KUBMESH_KEEPALIVE": "5", "MAX_INTERVAL": "2", **self.extra_env},
        ).wait_port(self.api_port)
        return self

    def health(self) -> dict[str, Any]:
        return http_json(f"http://127.0.0.1:{self.api_port}/health")  # type: ignore[no-any-return]

    def stop(self) -> int:
        return self.process.stop() if self.process else 0


def send_a_week_of_history(mqtt_port: int, admin: Credentials, farm_id: str) -> int:
    """A week of readings every 15 minutes, sent on ``backlog`` as an agent replays them after an outage
    (numbered far above a live agent's own), for a real discovery node to record; returns how many."""
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"history-replay-{farm_id}")
    client.username_pw_set(admin.username, admin.password)
    client.connect("127.0.0.1", mqtt_port)
    client.loop_start()
    now, step = utc_now(), timedelta(minutes=15)
    readings = [Reading(ts=now - step * i, seq=1_000_000 + i, values={
        "temp_inside": round(24 + 3 * math.sin(i / 8), 1), "humidity": round(60 + 10 * math.cos(i / 8), 1)})
        for i in range(7 * 24 * 4, 0, -1)]
    for reading in readings:
        client.publish(Topics().backlog(farm_id), encode(reading), qos=1).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()
    return len(readings)
