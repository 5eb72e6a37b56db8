"""Two discovery nodes at once on one Mosquitto and one PostgreSQL: both record, a reading both receive is stored
once, the REST API answers the same on either, one node at a time holds the lease on the one-node duties, and
when that node is killed (SIGKILL) while readings and alarms flow, none is missing, each alarm is told once (by
the lease holder: before the kill the first node, after it the other) and the other takes the lease over within
the lease interval; the retained discovery status stays ``online`` while a node is up. The alerts are shared: one
row per alert whichever node opened it, an acknowledgement through one node's REST API shows on the other's, and
the node that takes over neither reminds of it nor escalates it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from common.identities import IdentityStore, Role
from contract.payloads import (
    AlarmItem,
    Alarms,
    DeviceInfo,
    Meta,
    ProfileSummary,
    Reading,
    Status,
    encode,
    format_ts,
    utc_now,
)
from tests.alert_receivers import HttpReceiver
from tests.conftest import RunningMosquitto
from tests.helpers import REPO, MqttWatcher, ServiceProcess, free_port, wait_until
from tests.test_discovery import TOKEN, Discovery, farm_client

FARM = "farm-100"
PASSWORDS = {FARM: "farm-secret", "discovery": "discovery-secret", "viewer": "viewer-secret"}
LEASE_INTERVAL_S = 1.0
SLACK_S = 2.0  # a loaded 2-core machine's scheduling, on top of the stated interval
READINGS = 200
START = utc_now().replace(microsecond=0) - timedelta(hours=1)


def start_node(name: str, tmp_path: Path, mosquitto: RunningMosquitto, database_url: str,
               receiver: HttpReceiver, alert_env: dict[str, str] | None = None) -> Discovery:
    data_dir = tmp_path / f"node-{name}"
    if not data_dir.exists():  # every node knows the users; whom to tell is in the shared store
        data_dir.mkdir()
        IdentityStore(data_dir).add("farmer", Role.OPERATOR, password="farmer-pass-1")
        IdentityStore(data_dir).add("boss", Role.ADMIN, password="boss-pass-1")
        for user, tier in (("farmer", "1"), ("boss", "2")):
            subprocess.run([sys.executable, "-m", "kubmesh", "notify", "add", user, receiver.url("json", f"/{user}"),
                            "--tier", tier, "--data-dir", str(data_dir)], check=True, capture_output=True, cwd=REPO,
                           env={**os.environ, "DATABASE_URL": database_url})
    api_port = free_port()
    process = ServiceProcess(
        ["discovery", "--data-dir", str(data_dir), "--host", "127.0.0.1", "--port", str(api_port)],
        tmp_path / f"discovery-{name}-{api_port}.log",
        env={"API_TOKEN": TOKEN, "MQTT_URL": mosquitto.url("discovery", PASSWORDS["discovery"]),
             "DATABASE_URL": database_url, "NODE_NAME": name, "LEASE_INTERVAL": str(LEASE_INTERVAL_S),
             "TAILSCALE_SYNC": "false", "ALERT_DELAY": "0", "ALERT_REMIND_INTERVAL": "3600",
             "ALERT_ESCALATE_AFTER": "3600", "ALERT_SILENT_AFTER": "3600", **(alert_env or {})},
    ).wait_port(api_port)
    node = Discovery(process, api_port, mosquitto.port, None)  # type: ignore[arg-type]
    wait_until(lambda: node.get("/health")[1]["broker"] == "connected", 15, what=f"node {name} connected")
    return node


def holds_lease(node: Discovery) -> bool:
    try:
        return bool(node.get("/health")[1]["storage"]["lease"]["held"])
    except OSError:  # killed
        return False


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    server = HttpReceiver().start()
    yield server
    server.stop()


def alarm(bit: int) -> bytes:
    item = AlarmItem(bit=bit, label=f"alarm bit {bit}")
    return encode(Alarms(ts=utc_now(), active=[item], latched=[item], warnings=[]))


@pytest.fixture
def nodes(tmp_path: Path, mosquitto: RunningMosquitto, postgres_url: str,
          receiver: HttpReceiver) -> Iterator[dict[str, Discovery]]:
    for username, password in PASSWORDS.items():
        mosquitto.add_user(username, password)
    running = {name: start_node(name, tmp_path, mosquitto, postgres_url, receiver) for name in ("a", "b")}
    yield running
    for node in running.values():
        node.process.stop()


def test_two_nodes_store_each_reading_once_and_one_takes_over_when_the_other_is_killed(
        nodes: dict[str, Discovery], mosquitto: RunningMosquitto, tmp_path: Path, postgres_url: str,
        receiver: HttpReceiver) -> None:
    wait_until(lambda: sum(holds_lease(node) for node in nodes.values()) == 1, 10, what="one node holds the lease")
    holder = next(name for name, node in nodes.items() if holds_lease(node))
    other = "b" if holder == "a" else "a"
    assert nodes[holder].get("/health")[1]["storage"]["backend"] == "postgresql"
    status = MqttWatcher(mosquitto.port, "viewer", PASSWORDS["viewer"], "kub/discovery/status")
    farm = farm_client(mosquitto.port, type("C", (), {"username": FARM, "password": PASSWORDS[FARM]})())  # type: ignore[arg-type]
    sent = threading.Event()

    def publish_readings() -> None:
        farm.publish(f"kub/farms/{FARM}/status", encode(Status(state="online", ts=utc_now())), 1, True)
        farm.publish(f"kub/farms/{FARM}/meta", encode(Meta(
            farm_id=FARM, name="Птичник", agent_version="test", poll_interval_s=5, ts=utc_now(),
            device=DeviceInfo(model="KUB-1063"), profile=ProfileSummary(name="kub1063", values=[]))), 1, True)
        for seq in range(1, READINGS + 1):
            # a steady value: no value rule fires, only the alarms are told
            reading = Reading(ts=START + timedelta(seconds=5 * seq), seq=seq, values={"temp_inside": 21.0})
            farm.publish(f"kub/farms/{FARM}/state", encode(reading), qos=1, retain=True).wait_for_publish(5)
            time.sleep(0.01)  # a steady flow, so that the kill lands in the middle of it
        sent.set()

    try:
        publisher = threading.Thread(target=publish_readings)
        publisher.start()
        wait_until(lambda: (nodes[other].get(f"/api/farms/{FARM}")[1].get("history") or {}).get("readings", 0)
                   >= READINGS // 4, 15, what="a quarter of the readings stored")
        farm.publish(f"kub/farms/{FARM}/alarms", alarm(3), qos=1, retain=True).wait_for_publish(5)
        wait_until(lambda: len(receiver.on("/farmer")) >= 1, 15, what="the first alarm told")
        nodes[holder].process.kill()  # SIGKILL: no clean stop, no last words but the broker's will
        killed_at = time.monotonic()
        wait_until(lambda: holds_lease(nodes[other]), LEASE_INTERVAL_S + SLACK_S, interval=0.1,
                   what=f"node {other} takes over the lease within {LEASE_INTERVAL_S} s")
        took_over_s = time.monotonic() - killed_at
        farm.publish(f"kub/farms/{FARM}/alarms", alarm(5), qos=1, retain=True).wait_for_publish(5)
        wait_until(lambda: len(receiver.on("/farmer")) >= 2, 15, what="the second alarm told by the new holder")
        publisher.join(30)
        assert sent.is_set()
        summary = wait_until(lambda: (f := nodes[other].get(f"/api/farms/{FARM}")[1]).get("history", {}).get(
            "readings") == READINGS and f["history"], 15, what="every reading stored")
        assert summary == {"readings": READINGS, "first_seq": 1, "last_seq": READINGS, "gaps": 0, "missing": 0}
        # the retained status: the killed node's will said offline, the one still up said online again
        wait_until(lambda: status.last("kub/discovery/status") == "online", 10, what="the discovery status online")

        # the killed node back: its persistent session had the rest queued; both answer the same
        nodes[holder] = start_node(holder, tmp_path, mosquitto, postgres_url, receiver)
        end = format_ts(START + timedelta(hours=2))
        query = f"/api/farms/{FARM}/history?name=temp_inside&from={format_ts(START)}&to={end}"
        answers = [node.get(query) for node in nodes.values()]
        assert answers[0] == answers[1] and answers[0][0] == 200
        assert len(answers[0][1]["points"]) == READINGS
        assert nodes[holder].get(f"/api/farms/{FARM}")[1]["history"] == summary
        assert not holds_lease(nodes[holder]) and holds_lease(nodes[other])  # no taking back
        assert took_over_s <= LEASE_INTERVAL_S + SLACK_S
        told = [r.json()["message"] for r in receiver.on("/farmer")]
        assert len(told) == 2 and "бит 3" in told[0] and "бит 5" in told[1], told  # each once, by one node
    finally:
        farm.loop_stop()
        status.close()


def post(node: Discovery, path: str) -> tuple[int, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{node.api_port}{path}", method="POST",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, json.load(response)


def alerts_of(node: Discovery) -> list[dict[str, Any]]:
    status, body = node.get(f"/api/alerts?state=all&farm={FARM}")
    assert status == 200, body
    return sorted(body["alerts"], key=lambda alert: alert["id"])


REMIND_S, ESCALATE_S = 3.0, 5.0


@pytest.fixture
def reminding_nodes(tmp_path: Path, mosquitto: RunningMosquitto, postgres_url: str,
                    receiver: HttpReceiver) -> Iterator[dict[str, Discovery]]:
    """Two nodes that remind and escalate within seconds."""
    for username, password in PASSWORDS.items():
        mosquitto.add_user(username, password)
    env = {"ALERT_REMIND_INTERVAL": str(REMIND_S), "ALERT_ESCALATE_AFTER": str(ESCALATE_S)}
    running = {name: start_node(name, tmp_path, mosquitto, postgres_url, receiver, env) for name in ("a", "b")}
    yield running
    for node in running.values():
        node.process.stop()


@pytest.mark.slow
def test_an_alert_acknowledged_on_one_node_is_acknowledged_on_both_and_not_reminded_after_a_takeover(
        reminding_nodes: dict[str, Discovery], mosquitto: RunningMosquitto, receiver: HttpReceiver) -> None:
    nodes = reminding_nodes
    wait_until(lambda: sum(holds_lease(node) for node in nodes.values()) == 1, 10, what="one node holds the lease")
    holder = next(name for name, node in nodes.items() if holds_lease(node))
    other = "b" if holder == "a" else "a"
    farm = farm_client(mosquitto.port, type("C", (), {"username": FARM, "password": PASSWORDS[FARM]})())  # type: ignore[arg-type]
    try:
        farm.publish(f"kub/farms/{FARM}/status", encode(Status(state="online", ts=utc_now())), 1, True)
        farm.publish(f"kub/farms/{FARM}/alarms", alarm(3), qos=1, retain=True).wait_for_publish(5)
        wait_until(lambda: len(receiver.on("/farmer")) >= 1, 15, what="the alarm told")
        # both nodes opened it: one row, the same on either node
        wait_until(lambda: alerts_of(nodes[other]) == alerts_of(nodes[holder]) != [], 10,
                   what="the same alert on both nodes")
        [alert] = alerts_of(nodes[holder])
        status, body = post(nodes[holder], f"/api/alerts/{alert['id']}/ack")
        assert status == 200 and body["alert"]["state"] == "acknowledged"
        acknowledged_at = time.monotonic()
        [seen] = alerts_of(nodes[other])
        assert (seen["id"], seen["state"], seen["acknowledged_by"]) == (alert["id"], "acknowledged", "API_TOKEN")

        nodes[holder].process.kill()
        wait_until(lambda: holds_lease(nodes[other]), LEASE_INTERVAL_S + SLACK_S, interval=0.1,
                   what=f"node {other} takes over the lease")
        # a new alarm, told, reminded and escalated by the new holder: by then bit 3 (older) would have been too
        farm.publish(f"kub/farms/{FARM}/alarms", alarm(5), qos=1, retain=True).wait_for_publish(5)
        wait_until(lambda: any("бит 5" in r.json()["message"] for r in receiver.on("/boss")), 15 + ESCALATE_S,
                   what="bit 5 escalated by the new holder")
        wait_until(lambda: any("бит 5" in r.json()["message"] and "НЕ ПОДТВЕРЖДЕНА" in r.json()["message"]
                               for r in receiver.on("/farmer")), 15 + REMIND_S, what="bit 5 reminded")
        since_ack = [r.json()["message"] for r in receiver.received if r.at > acknowledged_at]
        assert not [m for m in since_ack if "бит 3" in m], since_ack  # neither reminded nor escalated
        opened = [r.json()["message"] for r in receiver.on("/farmer") if "НОВАЯ" in r.json()["message"]]
        assert sum("бит 3" in m for m in opened) == 1 and sum("бит 5" in m for m in opened) == 1, opened
        assert [a["subject"] for a in alerts_of(nodes[other])].count("alarm bit 3") == 1
    finally:
        farm.loop_stop()
