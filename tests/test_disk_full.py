"""A full data dir: a real agent on a small real filesystem, a real simulator, broker and discovery node.

The agent's data dir is a filesystem of its own (a tmpfs of a few MB, or an ext4 image on a loop
device), filled to the last byte by a file, and given its space back by removing the file. The
agent must go on polling and publishing, hold what it cannot store in memory, say so, and recover
by itself, with no reading lost.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.identities import Role
from tests.conftest import RunningBroker
from tests.farm_system import Agent, Simulator, http_json
from tests.helpers import MqttWatcher, wait_until
from tests.tcp_proxy import TcpProxy
from tests.test_discovery import start_discovery

FARM = "farm-disk"
SIZE_MB = 8
FAST = {"MAX_INTERVAL": "0", "HEARTBEAT_INTERVAL": "1", "KUBMESH_RECONNECT_MAX": "1"}  # every poll is a reading


def _mount(path: Path, tmp_path: Path) -> str | None:
    """Mount a small filesystem on ``path``; None when it worked, else why it could not."""
    tmpfs = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE_MB}m", "tmpfs", str(path)],
                           capture_output=True, text=True)
    if tmpfs.returncode == 0:
        return None
    image = tmp_path / "disk.img"
    with open(image, "wb") as file:
        file.truncate(SIZE_MB * 1024 * 1024)
    made = subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], capture_output=True, text=True)
    loop = subprocess.run(["mount", "-o", "loop", str(image), str(path)], capture_output=True, text=True) \
        if made.returncode == 0 else made
    if loop.returncode == 0:
        return None
    return f"tmpfs: {tmpfs.stderr.strip() or tmpfs.returncode}; loop device: {loop.stderr.strip() or loop.returncode}"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A directory on a filesystem of its own, a few MB large."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    path = tmp_path / "agent-data"
    path.mkdir()
    refused = _mount(path, tmp_path)
    if refused:
        pytest.skip(f"no small filesystem can be mounted here ({refused})")
    yield path
    subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder: Path) -> Path:
    """Take every byte left on ``folder``'s filesystem with one file; returns it."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1024 * 1024, 64 * 1024, 4096, 512, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return filler


Farm = tuple[Agent, TcpProxy, MqttWatcher]


@pytest.fixture
def farm_factory(broker: RunningBroker, simulator: Simulator, small_disk: Path, tmp_path: Path) -> Iterator[Any]:
    made: list[Farm] = []
    # the history's confirmation is what lets a reading leave the agent's queue
    service = broker.add("discovery", Role.DISCOVERY)
    discovery = start_discovery(tmp_path, tmp_path / "discovery", env={"MQTT_URL": broker.url(service)},
                                mqtt_port=broker.port)

    def make(env: dict[str, str] | None = None) -> Farm:
        proxy = TcpProxy(broker.port).start()
        credentials = broker.add(FARM, Role.FARM)
        watcher = MqttWatcher(broker.port, broker.admin.username, broker.admin.password, f"kub/farms/{FARM}/#")
        agent = Agent(tmp_path, small_disk, FARM, f"mqtt://{FARM}:{credentials.password}@127.0.0.1:{proxy.port}",
                      simulator.modbus_url, poll_interval=0.3, extra_env={**FAST, **(env or {})}).start()
        made.append((agent, proxy, watcher))
        return made[-1]

    yield make
    for agent, proxy, watcher in made:
        agent.stop()
        watcher.close()
        proxy.close()
    discovery.process.stop()


def _topic(kind: str) -> str:
    return f"kub/farms/{FARM}/{kind}"


def _seqs(watcher: MqttWatcher) -> set[int]:
    return {int(r["seq"]) for kind in ("state", "backlog") for r in watcher.payloads(_topic(kind))}


def _events(watcher: MqttWatcher, kind: str) -> list[dict[str, Any]]:
    return [e for e in watcher.payloads(_topic("events")) if e["kind"] == kind]


def test_agent_with_a_full_data_dir_keeps_publishing_says_so_and_recovers_by_itself(
    farm_factory: Any, small_disk: Path
) -> None:
    agent, proxy, watcher = farm_factory()
    wait_until(lambda: len(_seqs(watcher)) >= 3, 15, what="the first readings")
    polls, newest = agent.health()["polls_ok"], max(_seqs(watcher))
    filler = fill(small_disk)

    # polling and live readings go on
    wait_until(lambda: agent.health()["polls_ok"] >= polls + 20, 15, what="polls going on")
    wait_until(lambda: max(_seqs(watcher)) >= newest + 20, 10, what="live readings going on")
    # and the agent says why it is degraded
    health = wait_until(lambda: (h := agent.health())["storage"] == "error" and h, 5, what="the full disk noticed")
    assert health["status"] == "degraded" and "full" in health["storage_error"]
    beat = wait_until(lambda: (b := watcher.last(_topic("heartbeat"))) and b.get("storage_error") and b, 5,
                      what="the heartbeat telling it")
    assert "full" in beat["storage_error"] and beat["in_memory"] >= 0
    wait_until(lambda: _events(watcher, "storage_error"), 5, what="a storage_error event")

    # with the broker away too, the readings wait in memory
    proxy.cut()
    wait_until(lambda: agent.health()["broker"] == "disconnected", 10, what="the agent noticing the cut")
    held = wait_until(lambda: (n := agent.health()["in_memory"]) >= 5 and n, 15, what="readings held in memory")
    assert agent.health()["backlog"] >= held

    filler.unlink()
    health = wait_until(lambda: (h := agent.health())["storage"] == "ok" and h, 15, what="the space noticed")
    assert health["storage_error"] is None and health["in_memory"] == 0 and health["backlog"] >= held
    proxy.restore()
    wait_until(lambda: (h := agent.health())["status"] == "ok" and h["backlog"] == 0, 30,
               what="connected again with the backlog replayed")
    wait_until(lambda: "storage_error" not in watcher.last(_topic("heartbeat")), 5, what="a healthy heartbeat")

    # nothing was lost: every number from the first to the newest reached the bus
    newest = int(http_json(f"http://127.0.0.1:{agent.api_port}/api/data")["seq"])
    wait_until(lambda: _seqs(watcher) >= set(range(1, newest + 1)), 10, what=f"readings 1 to {newest} on the bus")
    assert agent.health()["dropped"] == 0

    # and again, with the broker listening: the recovery is told on events too (they are not kept for later)
    filler = fill(small_disk)
    wait_until(lambda: len(_events(watcher, "storage_error")) == 2, 15, what="the second full disk told")
    filler.unlink()
    wait_until(lambda: _events(watcher, "storage_restored"), 15, what="a storage_restored event")
    assert agent.health()["status"] == "ok"


def test_the_memory_buffer_of_a_full_disk_is_bounded_and_what_it_drops_is_reported(
    farm_factory: Any, small_disk: Path
) -> None:
    agent, proxy, watcher = farm_factory({"QUEUE_MAX_MEMORY_READINGS": "5"})
    wait_until(lambda: len(_seqs(watcher)) >= 3, 15, what="the first readings")
    filler = fill(small_disk)
    wait_until(lambda: agent.health()["storage"] == "error", 15, what="the full disk noticed")
    in_flight = agent.health()["backlog"]  # sent, perhaps stored, not confirmed yet
    proxy.cut()
    wait_until(lambda: agent.health()["dropped"] >= 5, 20, what="the memory bound reached")
    health = agent.health()
    assert health["in_memory"] == 5
    filler.unlink()
    proxy.restore()
    wait_until(lambda: (h := agent.health())["status"] == "ok" and h["backlog"] == 0, 30, what="recovered")
    dropped = agent.health()["dropped"]
    events = wait_until(lambda: _events(watcher, "backlog_dropped"), 10, what="the drop reported")
    wait_until(lambda: sum(e["detail"]["dropped"] for e in _events(watcher, "backlog_dropped")) == dropped, 10,
               what=f"all {dropped} dropped readings reported")
    assert events
    wait_until(lambda: watcher.last(_topic("heartbeat"))["dropped"] == dropped, 5, what="the heartbeat's count")
    newest = int(http_json(f"http://127.0.0.1:{agent.api_port}/api/data")["seq"])

    def missing() -> set[int]:
        return set(range(1, newest + 1)) - _seqs(watcher)

    # a reading sent before the link was cut and not yet confirmed counts as dropped and yet reached the
    # bus: at most those in flight then, and one whose PUBACK never came
    wait_until(lambda: len(missing()) <= dropped, 10, what=f"no more than the {dropped} dropped readings missing")
    assert dropped - in_flight - 1 <= len(missing()) <= dropped, (dropped, in_flight, sorted(missing()))
