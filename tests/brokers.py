"""The brokers the security tests run against: the embedded one, and a real Mosquitto that reads the
password and ACL files ``kubmesh broker export-mosquitto`` writes from the same identity store."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from common.identities import Credentials, IdentityStore, Role
from tests.conftest import MOSQUITTO, RunningBroker
from tests.helpers import REPO, free_port, port_open, wait_until
from tests.tls import ThrowawayCA


def connects(port: int, credentials: Credentials | None, *, tls: bool = False, ca: ThrowawayCA | None = None,
             timeout: float = 5) -> bool:
    """Whether the broker answers a CONNECT with these credentials with success (over TLS, trusting
    ``ca`` or, without it, the system's CAs)."""
    done = threading.Event()
    result: list[bool] = []
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    if credentials:
        client.username_pw_set(credentials.username, credentials.password)
    if tls or ca:
        client.tls_set(ca_certs=str(ca.ca_file) if ca else None)

    def on_connect(client: paho.Client, userdata: object, flags: object, rc: paho.ReasonCode, props: object) -> None:
        result.append(not rc.is_failure)
        done.set()

    client.on_connect = on_connect
    try:
        client.connect("127.0.0.1", port, keepalive=10)
    except OSError:
        return False
    client.loop_start()
    done.wait(timeout)
    client.disconnect()
    client.loop_stop()
    return bool(result and result[0])


@dataclass
class Bus:
    """One broker under test and the identity store it answers to; ``add``/``rotate``/``remove`` take effect
    before they return (the embedded broker reads the store at every connect; Mosquitto gets fresh files and
    a SIGHUP)."""

    kind: str
    port: int
    store: IdentityStore
    admin: Credentials
    log_path: Path
    export_dir: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    tls_port: int | None = None

    @property
    def refuses_subscriptions(self) -> bool:
        """amqtt refuses a SUBSCRIBE outside the client's rights; Mosquitto's acl_file grants it and
        delivers nothing."""
        return self.kind == "embedded"

    def add(self, username: str, role: Role, owner: str | None = None) -> Credentials:
        credentials = self.store.add(username, role, owner=owner)
        self.sync(lambda: connects(self.port, credentials))
        return credentials

    def rotate(self, username: str) -> Credentials:
        credentials = self.store.rotate(username)
        self.sync(lambda: connects(self.port, credentials))
        return credentials

    def remove(self, username: str, old: Credentials) -> None:
        self.store.remove(username)
        self.sync(lambda: not connects(self.port, old))

    def sync(self, applied: Callable[[], bool]) -> None:
        if self.kind == "mosquitto":
            assert self.process is not None and self.export_dir is not None
            export(self.store.path.parent, self.export_dir)
            self.process.send_signal(signal.SIGHUP)  # mosquitto re-reads its password and ACL files
            wait_until(applied, 10, what="mosquitto to reload the exported files")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def url(self, credentials: Credentials) -> str:
        return f"mqtt://{credentials.username}:{credentials.password}@127.0.0.1:{self.port}"


def export(data_dir: Path, directory: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "kubmesh", "broker", "export-mosquitto", str(directory), "--data-dir", str(data_dir)],
        check=True, capture_output=True, timeout=30, cwd=REPO,
    )


@dataclass
class ExportedMosquitto:
    """Mosquitto configured only with the exported files (and a TLS listener when given a CA)."""

    data_dir: Path
    tmp_path: Path
    ca: ThrowawayCA | None = None
    port: int = field(default_factory=free_port)
    tls_port: int | None = None
    process: subprocess.Popen[bytes] | None = None
    extra: list[str] = field(default_factory=list)  # more lines of mosquitto.conf

    def start(self) -> subprocess.Popen[bytes]:
        export_dir = self.tmp_path / "mosquitto-export"
        export(self.data_dir, export_dir)
        config = [
            "per_listener_settings false", "allow_anonymous false", "persistence false", "user root",
            f"password_file {export_dir / 'mosquitto.passwd'}", f"acl_file {export_dir / 'mosquitto.acl'}",
            f"listener {self.port} 127.0.0.1", *self.extra,
        ]
        if self.ca:
            self.tls_port = free_port()
            config += [f"listener {self.tls_port} 127.0.0.1", f"certfile {self.ca.certfile}",
                       f"keyfile {self.ca.keyfile}"]
        path = self.tmp_path / "mosquitto-exported.conf"
        path.write_text("\n".join(config) + "\n")
        with open(self.tmp_path / "mosquitto.log", "ab") as log:
            self.process = subprocess.Popen([MOSQUITTO, "-c", str(path), "-v"], stdout=log, stderr=subprocess.STDOUT)
        for port in (self.port, self.tls_port):
            if port:
                wait_until(lambda p=port: port_open(p), 10, what="mosquitto to listen")  # type: ignore[misc]
        return self.process

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(5)


def embedded_bus(broker: RunningBroker) -> Bus:
    return Bus("embedded", broker.port, broker.store, broker.admin, broker.process.log_path)


def mosquitto_bus(data_dir: Path, tmp_path: Path, extra: list[str] | None = None) -> tuple[Bus, ExportedMosquitto]:
    store = IdentityStore(data_dir)
    admin = store.add("admin", Role.ADMIN)
    mosquitto = ExportedMosquitto(data_dir, tmp_path, extra=extra or [])
    process = mosquitto.start()
    bus = Bus("mosquitto", mosquitto.port, store, admin, tmp_path / "mosquitto.log",
              tmp_path / "mosquitto-export", process)
    return bus, mosquitto


@pytest.fixture(params=["embedded", "mosquitto"], name="bus")
def bus_on_each_broker(request: pytest.FixtureRequest, data_dir: Path, tmp_path: Path) -> Iterator[Bus]:
    """The embedded broker and a Mosquitto configured by the export, each in turn."""
    if request.param == "embedded":
        broker: RunningBroker = request.getfixturevalue("broker")
        yield embedded_bus(broker)
        return
    running, mosquitto = mosquitto_bus(data_dir, tmp_path)
    yield running
    mosquitto.stop()
