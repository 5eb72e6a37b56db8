"""Fixtures that start real components on free loopback ports, each test with its own data dir."""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from common.identities import Credentials, IdentityStore, Role
from discovery.settings import DiscoverySettings
from discovery.storage import Storage, open_storage
from tests.farm_system import Simulator
from tests.helpers import ServiceProcess, free_port, port_open, wait_until
from tests.postgres import PostgresServer, postgres_server


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
    running = RunningBroker(port, data_dir, store, process, admin)
    yield running
    running.process.stop()  # a test may have restarted it


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[Simulator]:
    """``kubmesh simulate``: a KUB-1063 on Modbus TCP, with its control API."""
    sim = Simulator(tmp_path).start()
    yield sim
    sim.stop()


MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


@dataclass
class RunningMosquitto:
    """A real Mosquitto (Debian package) with a password file, for the external-broker path."""

    port: int
    password_file: Path
    process: subprocess.Popen[bytes]

    def add_user(self, username: str, password: str) -> None:
        subprocess.run(["mosquitto_passwd", "-b", str(self.password_file), username, password], check=True)
        self.process.send_signal(signal.SIGHUP)  # mosquitto re-reads its password file

    def url(self, username: str, password: str) -> str:
        return f"mqtt://{username}:{password}@127.0.0.1:{self.port}"


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[RunningMosquitto]:
    port = free_port()
    password_file = tmp_path / "mosquitto.passwd"
    password_file.touch(mode=0o600)
    config = tmp_path / "mosquitto.conf"
    config.write_text(
        # "user root" keeps mosquitto as the invoking user (it would drop to "mosquitto" and lose the file)
        f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {password_file}\npersistence false\n"
        "user root\n"
    )
    with open(tmp_path / "mosquitto.log", "wb") as log:
        process = subprocess.Popen([MOSQUITTO, "-c", str(config)], stdout=log, stderr=subprocess.STDOUT)
    wait_until(lambda: port_open(port), 10, what="mosquitto to listen")
    yield RunningMosquitto(port, password_file, process)
    process.terminate()
    process.wait(5)


@pytest.fixture
def serial_pair(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """Two ends of a null-modem serial line: socat ptys linked at ``ttyA`` and ``ttyB``."""
    a, b = tmp_path / "ttyA", tmp_path / "ttyB"
    socat = subprocess.Popen(["socat", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
                             stderr=subprocess.DEVNULL)
    wait_until(lambda: a.exists() and b.exists(), 5, what="the socat serial pair")
    yield a, b
    socat.terminate()
    socat.wait(5)


@pytest.fixture
def web_process(broker: RunningBroker, tmp_path: Path, data_dir: Path) -> Iterator[tuple[ServiceProcess, int]]:
    """``kubmesh mobile-web`` as a process on the broker, with a viewer ``vera`` (password ``viewer-pass``)."""
    service = broker.add("mobile_web", Role.MOBILE_WEB)
    broker.store.add("vera", Role.VIEWER, password="viewer-pass")
    port = free_port()
    process = ServiceProcess(
        ["mobile-web", "--data-dir", str(data_dir), "--host", "127.0.0.1", "--port", str(port)],
        tmp_path / "web.log", env={"MQTT_URL": broker.url(service), "KUBMESH_KEEPALIVE": "5"},
    ).wait_port(port)
    yield process, port
    process.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the test run (started only if a test asks for it)."""
    with postgres_server() as server:
        yield server


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> Iterator[str]:
    """A fresh database on the test run's server, for one test."""
    with postgres.database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    """The discovery node's storage on each backend, opened: the same test runs against both."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    opened = open_storage(DiscoverySettings(data_dir=tmp_path / "data", database_url=url))
    opened.open()
    yield opened
    opened.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """The environment that points a discovery process at each backend."""
    if request.param == "sqlite":
        return {}
    return {"DATABASE_URL": request.getfixturevalue("postgres_url")}
