"""Helpers for tests that start real processes: free ports, waiting on conditions, service processes."""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as paho

T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent


# Test servers listen below the kernel's ephemeral range (32768-60999 on Linux), where no outgoing
# connection takes a port, and each pytest-xdist worker draws from its own slice, so two workers
# never hand out the same port.
PORT_RANGE = range(20000, 32000)
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
_WORKERS = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
_SLICE = len(PORT_RANGE) // _WORKERS
_FIRST = PORT_RANGE.start + _SLICE * (int(_WORKER.removeprefix("gw") or 0) % _WORKERS)
_next_port = _FIRST + random.randrange(_SLICE)


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_consecutive_ports(count: int) -> int:
    """The first of ``count`` consecutive free ports of this worker's slice (never handed out twice)."""
    global _next_port
    for _ in range(_SLICE):
        first = _next_port
        _next_port = first + count if first + 2 * count < _FIRST + _SLICE else _FIRST
        if all(_bindable(first + i) for i in range(count)):
            return first
    raise RuntimeError(f"no {count} consecutive free ports")


def free_port() -> int:
    return free_consecutive_ports(1)


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, what: str = "") -> T:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:  # the condition may not be checkable yet
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}: {last_error or ''}")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


class ServiceProcess:
    """A ``kubmesh`` subcommand in its own process, with its output kept in a log file."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - lives as long as the process
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kubmesh", *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=REPO,
        )

    def wait_port(self, port: int, timeout: float = 20.0) -> ServiceProcess:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"kubmesh {' '.join(self.args)} exited early:\n{self.output()}")
            return port_open(port)

        try:
            wait_until(ready, timeout, what=f"port {port} of kubmesh {self.args[0]}")
        except AssertionError:
            raise AssertionError(f"port {port} not open; output:\n{self.output()}") from None
        return self

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


class MqttWatcher:
    """A real paho client that records every message it sees, for asserting on the bus."""

    def __init__(self, port: int, username: str | None, password: str | None, topics: str | list[str] = "#",
                 host: str = "127.0.0.1") -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.connect_rc: Any = None
        self.subscribed = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
        if username:
            self.client.username_pw_set(username, password)
        topic_list = [topics] if isinstance(topics, str) else topics

        def on_connect(client: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
            self.connect_rc = rc
            if not rc.is_failure:
                client.subscribe([(t, 1) for t in topic_list])

        def on_subscribe(client: paho.Client, userdata: Any, mid: int, rcs: Any, props: Any = None) -> None:
            self.granted = rcs
            self.subscribed.set()

        def on_message(client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
            with self.lock:
                self.messages.append((msg.topic, msg.payload, bool(msg.retain)))

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = on_message
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()

    def payloads(self, topic: str) -> list[Any]:
        with self.lock:
            found = [p for t, p, _ in self.messages if t == topic]
        return [json.loads(p) if p[:1] in (b"{", b"[") else p.decode() for p in found]

    def last(self, topic: str) -> Any:
        found = self.payloads(topic)
        return found[-1] if found else None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def web_login(port: int, username: str, password: str) -> str | None:
    """Log in to a running mobile web; the session cookie (``session=…``), or None when refused."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/login")
        page = connection.getresponse()
        cookie = (page.getheader("Set-Cookie") or "").split(";")[0]
        token = page.read().decode().split('name="csrf_token" value="')[1].split('"')[0]
        form = urllib.parse.urlencode({"username": username, "password": password, "csrf_token": token})
        connection.request("POST", "/login", form,
                           {"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"})
        answer = connection.getresponse()
        answer.read()
        session = (answer.getheader("Set-Cookie") or "").split(";")[0]
        return session if answer.status == 302 and answer.getheader("Location") == "/" else None
    finally:
        connection.close()


def web_get(port: int, path: str, cookie: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path, headers={"Cookie": cookie})
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()
