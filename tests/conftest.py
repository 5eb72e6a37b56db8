"""Fixtures that start real components on free loopback ports, each test with its own data dir."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from broker.identities import Credentials, IdentityStore, Role
from tests.helpers import ServiceProcess, free_port


@dataclass
class RunningBroker:
    port: int
    data_dir: Path
    store: IdentityStore
    process: ServiceProcess
    admin: Credentials

    def add(self, username: str, role: Role, owner: str | None = None) -> Credentials:
        return self.store.add(username, role, owner=owner)

    def url(self, credentials: Credentials) -> str:
        return f"mqtt://{credentials.username}:{credentials.password}@127.0.0.1:{self.port}"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def broker(data_dir: Path, tmp_path: Path) -> Iterator[RunningBroker]:
    """``kubmesh broker`` (embedded amqtt with auth and ACL) on a free port."""
    store = IdentityStore(data_dir)
    admin = store.add("admin", Role.ADMIN)
    port = free_port()
    process = ServiceProcess(
        ["broker", "--data-dir", str(data_dir), "--mqtt-host", "127.0.0.1", "--mqtt-port", str(port)],
        tmp_path / "broker.log",
    ).wait_port(port)
    yield RunningBroker(port, data_dir, store, process, admin)
    process.stop()
