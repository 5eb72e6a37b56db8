"""``kubmesh demo``: the whole system on one machine, with simulated controllers.

It runs the same services a deployment runs, each in its own process (so one
can be killed to watch the farm go offline): the discovery node with the
embedded broker, a site — one agent with three poultry houses whose controllers
share one simulated RS-485 bus (units 1, 2, 3) — a greenhouse with its own
simulator and agent, and the mobile web. Credentials are made fresh on every start and written to
``DIR/credentials.json``; only hashes stay in the identity store. The demo's
agents publish ``state`` on every poll, so the bus and the pages move
visibly; deployed agents report by exception (``--max-interval``).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import yaml

from common.identities import Credentials, IdentityStore, Role
from common.mqtt import MqttUrl
from common.settings import load_settings
from discovery.alerting.channels import check_url
from discovery.alerting.kinds import Severity
from discovery.alerting.store import opened_alert_store
from discovery.settings import DiscoverySettings
from discovery.storage import opened_storage

SITE = "Агрофирма Север"
SITE_HOUSES = (("farm-001", "Птичник №1"), ("farm-003", "Птичник №2"), ("farm-004", "Птичник №3"))
GREENHOUSE = ("farm-002", "Теплица №2")
FARMS = (*SITE_HOUSES, GREENHOUSE)
DEMO_OWNER = "demo-owner"
STOP_TIMEOUT_S = 8.0
PR_SET_PDEATHSIG = 1  # prctl(2)


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run everything on this machine: a simulated site of three houses "
                                   "on one bus, and a greenhouse")
    parser.add_argument("--data-dir", default="./kubmesh-data", help="where data, logs and credentials.json go")
    parser.add_argument("--bind", default="127.0.0.1", help="address the broker, API and web listen on")
    parser.add_argument("--mqtt-port", type=int, default=1883)
    parser.add_argument("--api-port", type=int, default=8082)
    parser.add_argument("--web-port", type=int, default=5000)
    parser.add_argument("--agent-port", type=int, default=8080,
                        help="the site agent's HTTP port (+1: the greenhouse's agent)")
    parser.add_argument("--modbus-port", type=int, default=5020,
                        help="the site bus simulator's Modbus TCP port (+1: the greenhouse's)")
    parser.add_argument("--control-port", type=int, default=5030, help="the site bus simulator's control port (+1 …)")
    parser.add_argument("--poll-interval", type=float, default=float(os.environ.get("POLL_INTERVAL", 5)))
    parser.add_argument("--notify", action="append", default=[], metavar="URL",
                        help="an alert channel for the demo's farmer (an Apprise URL such as ntfy://…, "
                             "mailto://…, json://…); repeatable. ALERT_* settings of the environment apply")
    parser.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    logs = data_dir / "logs"
    logs.mkdir(exist_ok=True)
    ports = _ports(args)
    busy = [f"{name} {port}" for name, port in ports.items() if _port_busy(args.bind, port)]
    if busy:
        print(f"kubmesh demo: port(s) in use: {', '.join(busy)}; choose others with the --*-port options",
              file=sys.stderr)
        return 1

    problems = [problem for url in args.notify if (problem := check_url(url))]
    if problems:
        print(f"kubmesh demo: --notify: {problems[0]}", file=sys.stderr)
        return 1
    credentials = _make_credentials(IdentityStore(data_dir))
    _add_channels(data_dir, args.notify)
    api_token = secrets.token_hex(24)
    broker_url = MqttUrl(host="127.0.0.1", port=args.mqtt_port)
    children: list[Child] = []
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    def start(name: str, args_: list[str], env: dict[str, str] | None = None, wait_port: int | None = None) -> None:
        log_path = logs / f"{name}.log"
        with open(log_path, "ab") as log_file:  # the child keeps its own descriptor
            process = subprocess.Popen(
                [sys.executable, "-m", "kubmesh", *args_],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                start_new_session=True,  # Ctrl-C reaches the demo only; it stops the children in order
                preexec_fn=_die_with_parent,
            )
        children.append(Child(name, process, log_path))
        if wait_port is not None:
            _wait_for_port(children[-1], wait_port, lambda: stopping)

    try:
        start(
            "discovery",
            ["discovery", "--data-dir", str(data_dir), "--mqtt-host", args.bind, "--mqtt-port", str(args.mqtt_port),
             "--host", args.bind, "--port", str(args.api_port)],
            # the ALERT_* settings of the environment reach it as they are; the messages link to the demo's web
            env={"API_TOKEN": api_token,
                 "ALERT_LINK_URL": os.environ.get("ALERT_LINK_URL") or f"http://{_host(args.bind)}:{args.web_port}"},
            wait_port=args.mqtt_port,
        )
        _wait_for_port(children[-1], args.api_port, lambda: stopping)
        start(
            "simulator-site",
            ["simulate", "--units", ",".join(str(unit) for unit in range(1, len(SITE_HOUSES) + 1)),
             "--host", "127.0.0.1", "--port", str(args.modbus_port), "--control-port", str(args.control_port),
             "--seed", "1", "--day", "12"],
            wait_port=args.modbus_port,
        )
        start(
            f"simulator-{GREENHOUSE[0]}",
            ["simulate", "--host", "127.0.0.1", "--port", str(args.modbus_port + 1),
             "--control-port", str(args.control_port + 1), "--seed", "2", "--day", "21"],
            wait_port=args.modbus_port + 1,
        )
        site_config = _write_site_config(data_dir / "site_config.yaml", args, broker_url, credentials)
        start(
            "agent-site",
            ["farm-agent", "--config", str(site_config), "--data-dir", str(data_dir),
             "--poll-interval", str(args.poll_interval), "--max-interval", "0", "--host", "127.0.0.1",
             "--port", str(args.agent_port)],
            wait_port=args.agent_port,
        )
        farm_id, farm_name = GREENHOUSE
        start(
            f"agent-{farm_id}",
            ["farm-agent", "--data-dir", str(data_dir), "--farm-id", farm_id, "--farm-name", farm_name,
             "--owner-id", DEMO_OWNER, "--modbus-url", f"tcp://127.0.0.1:{args.modbus_port + 1}?unit=1",
             "--poll-interval", str(args.poll_interval), "--max-interval", "0", "--host", "127.0.0.1",
             "--port", str(args.agent_port + 1)],
            env={"MQTT_URL": str(broker_url.with_credentials(**credentials[farm_id].as_dict()))},
            wait_port=args.agent_port + 1,
        )
        start(
            "mobile-web",
            ["mobile-web", "--data-dir", str(data_dir), "--host", args.bind, "--port", str(args.web_port)],
            env={
                "MQTT_URL": str(broker_url.with_credentials(**credentials["mobile_web"].as_dict())),
                "DISCOVERY_SERVICE_URL": f"http://127.0.0.1:{args.api_port}",
                "DISCOVERY_API_TOKEN": api_token,  # the charts' history, asked server-side
                "POLL_INTERVAL": str(args.poll_interval),
            },
            wait_port=args.web_port,
        )
    except _Interrupted:
        return _stop_all(children)
    except _ChildFailed as exc:
        print(f"kubmesh demo: {exc}", file=sys.stderr)
        _stop_all(children)
        return 1

    _write_credentials(data_dir / "credentials.json", credentials, api_token)
    _print_summary(args, data_dir, credentials, api_token)

    reported: set[str] = set()
    while not stopping:
        for child in children:
            code = child.process.poll()
            if code is not None and child.name not in reported:
                reported.add(child.name)
                print(f"kubmesh demo: {child.name} exited with code {code} (log: {child.log_path})", file=sys.stderr)
        time.sleep(0.2)
    return _stop_all(children)


class _Interrupted(Exception):
    pass


class _ChildFailed(Exception):
    pass


def _die_with_parent() -> None:
    """In the child before exec: a SIGTERM when the demo dies, so a demo killed with SIGKILL leaves nothing running."""
    with contextlib.suppress(OSError, AttributeError):  # Linux only; elsewhere the demo's own stop has to do
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _write_site_config(path: Path, args: argparse.Namespace, broker_url: MqttUrl,
                       credentials: dict[str, Credentials]) -> Path:
    """The site agent's farm_config.yaml: its houses on one bus, each with its own identity (0600: it holds them)."""
    config = {
        "farm": {"owner_id": DEMO_OWNER, "site": SITE},
        "modbus": {"url": f"tcp://127.0.0.1:{args.modbus_port}"},
        "mqtt": {"url": str(broker_url)},
        "controllers": [{"id": farm_id, "name": name, "unit": unit, "mqtt_password": credentials[farm_id].password}
                        for unit, (farm_id, name) in enumerate(SITE_HOUSES, start=1)],
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        yaml.safe_dump(config, out, allow_unicode=True, sort_keys=False)
    return path


def _ports(args: argparse.Namespace) -> dict[str, int]:
    ports = {"MQTT": args.mqtt_port, "REST API": args.api_port, "web": args.web_port}
    for index, name in enumerate(("site", GREENHOUSE[0])):
        ports[f"agent {name}"] = args.agent_port + index
        ports[f"simulator {name}"] = args.modbus_port + index
        ports[f"simulator control {name}"] = args.control_port + index
    return ports


def _port_busy(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex(("127.0.0.1" if host == "0.0.0.0" else host, port)) == 0


def _wait_for_port(child: Child, port: int, interrupted: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if interrupted():  # type: ignore[operator]
            raise _Interrupted
        if child.process.poll() is not None:
            tail = child.log_path.read_text(errors="replace")[-2000:]
            raise _ChildFailed(f"{child.name} exited with code {child.process.returncode}:\n{tail}")
        if _port_busy("127.0.0.1", port):
            return
        time.sleep(0.1)
    raise _ChildFailed(f"{child.name} did not open port {port} within {timeout:.0f} s (log: {child.log_path})")


def _make_credentials(store: IdentityStore) -> dict[str, Credentials]:
    """Fresh secrets for every identity the demo uses (existing ones are rotated)."""
    credentials = {
        "admin": store.ensure("admin", Role.ADMIN),
        "viewer": store.ensure("viewer", Role.VIEWER),
        "farmer": store.ensure("farmer", Role.OPERATOR),
        "mobile_web": store.ensure("mobile_web", Role.MOBILE_WEB),
    }
    for farm_id, _ in FARMS:
        credentials[farm_id] = store.ensure(farm_id, Role.FARM, owner=DEMO_OWNER)
    return credentials


def _add_channels(data_dir: Path, urls: list[str]) -> None:
    """The demo's farmer is told of alerts through these channels (tier 1, warnings and above)."""
    settings = load_settings(DiscoverySettings, flags={"data_dir": str(data_dir)})  # as the demo's node reads them
    with opened_storage(settings) as storage, opened_alert_store(storage) as store:
        for url in urls:
            store.add_channel("farmer", url, Severity.WARNING, 1)


def _host(bind: str) -> str:
    return "127.0.0.1" if bind == "0.0.0.0" else bind


def _write_credentials(path: Path, credentials: dict[str, Credentials], api_token: str) -> None:
    document = {
        "mqtt": {"admin": credentials["admin"].as_dict(), "viewer": credentials["viewer"].as_dict()},
        "web": credentials["farmer"].as_dict(),
        "api": {"token": api_token},
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(document, out, indent=2)
        out.write("\n")


def _print_summary(args: argparse.Namespace, data_dir: Path, credentials: dict[str, Credentials], token: str) -> None:
    host = "127.0.0.1" if args.bind == "0.0.0.0" else args.bind
    admin, web = credentials["admin"], credentials["farmer"]
    print(
        f"""
kubmesh demo is running (Ctrl-C stops it).

  Mobile web     http://{host}:{args.web_port}/        login {web.username} / {web.password}
  REST API       http://{host}:{args.api_port}/api/farms  Authorization: Bearer {token}
  MQTT broker    mqtt://{host}:{args.mqtt_port}          admin {admin.username} / {admin.password}
  Site agent     http://127.0.0.1:{args.agent_port}/health  ({SITE}: {", ".join(f"{f} unit {u}" for u, (f, _) in
                                                            enumerate(SITE_HOUSES, start=1))} on one bus)
  Farm agent     http://127.0.0.1:{args.agent_port + 1}/health  ({GREENHOUSE[0]})

  Watch the bus: mosquitto_sub -h {host} -p {args.mqtt_port} -u {admin.username} -P {admin.password} -v -t 'kub/#'
  Credentials:   {data_dir / "credentials.json"}
  Logs:          {data_dir / "logs"}
""",
        flush=True,
    )


def _stop_all(children: list[Child]) -> int:
    """Agents first (they publish their offline status while the broker is still up), the broker last."""
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for group in (
        [c for c in children if c.name.startswith("agent")],
        [c for c in children if not c.name.startswith("agent") and c.name != "discovery"],
        [c for c in children if c.name == "discovery"],
    ):
        for child in group:
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        for child in group:
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait(2)
    print("kubmesh demo stopped.", file=sys.stderr)
    return 0
