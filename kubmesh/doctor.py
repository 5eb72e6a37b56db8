"""``kubmesh doctor``: checks a node and prints one line per check; exit status 1 if any failed.

A farm node (``--farm-id``, ``FARM_ID`` or a ``farm:`` section in the config) is
checked for its configuration, the broker (reachable, credentials accepted),
the controller (Modbus answers), the SMS modem when ``sms.device`` is set (asked of
the running agent, which holds its port, or else of the modem itself), the discovery
API, tailscaled (up, tagged ``tag:farm``), the clock and the disk; a discovery node
for its configuration, its broker, its database (SQLite, or the PostgreSQL of
DATABASE_URL) and REST API, tailscaled (tagged ``tag:discovery``), the clock and
the disk. A check that cannot apply here (no tailscale installed, nothing to
compare the clock with) says ``skip``, which is not a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import json
import os
import shutil
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import yaml

from common.identities import IdentityStore, StoreError
from common.mqtt import MqttUrl, async_client
from common.settings import ConfigError, ServiceSettings, load_settings
from common.tailscale.local import TailscaleCli, TailscaleCliError
from contract.payloads import SmsStatus, format_ts
from discovery.alerting.channels import display
from discovery.alerting.store import FILE as ALERTS_FILE
from discovery.alerting.store import opened_alert_store
from discovery.settings import DiscoverySettings
from discovery.storage import open_storage, opened_storage
from farm_agent.link import ModbusFailure, ModbusLink, ModbusUrl
from farm_agent.poller import Poller
from farm_agent.profile import ProfileError, load_profile
from farm_agent.settings import AgentSettings
from farm_agent.sms.modem import ModemError, make_modem

OK, FAIL, SKIP = "ok", "FAIL", "skip"
CLOCK_SKEW_MAX_S = 30.0
EARLIEST_SANE = datetime(2025, 1, 1, tzinfo=UTC)
MIN_FREE_BYTES = 100 * 1024 * 1024
MIN_FREE_SHARE = 0.05
TIMEOUT_S = 5.0


@dataclass
class Check:
    name: str
    status: str
    detail: str


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("doctor", help="check this node: config, broker, Modbus, Tailscale, clock, disk")
    parser.add_argument("--config", metavar="FILE", help="the node's YAML configuration")
    parser.add_argument("--data-dir", metavar="DIR")
    parser.add_argument("--mqtt-url", metavar="URL")
    parser.add_argument("--farm-id", help="check a farm node (otherwise: FARM_ID or farm: in the config)")
    parser.add_argument("--modbus-url", metavar="URL")
    parser.add_argument("--discovery-url", metavar="URL", help="the discovery REST API (DISCOVERY_SERVICE_URL)")
    parser.add_argument("--tailscale-cli", metavar="PATH", help="the tailscale command (TAILSCALE_CLI)")
    parser.set_defaults(func=run_doctor)


def run_doctor(args: argparse.Namespace) -> int:
    checks = asyncio.run(_checks(args))
    width = max(len(c.name) for c in checks)
    for check in checks:
        print(f"{check.status:<4}  {check.name:<{width}}  {check.detail}")
    failed = [c.name for c in checks if c.status == FAIL]
    skipped = sum(1 for c in checks if c.status == SKIP)
    summary = f"{len(checks) - len(failed) - skipped} of {len(checks)} checks passed"
    summary += f", {skipped} skipped" if skipped else ""
    summary += f"; failed: {', '.join(failed)}" if failed else ""
    print(summary)
    return 1 if failed else 0


def _python_check() -> Check:
    """Which Python runs kubmesh, and from which environment: a unit file's ``kubmesh`` must be this one."""
    version = ".".join(str(part) for part in sys.version_info[:3])
    if sys.prefix != sys.base_prefix:
        return Check("python", OK, f"{version} in the virtual environment {sys.prefix}")
    return Check("python", OK, f"{version} at {sys.executable} (no virtual environment)")


async def _checks(args: argparse.Namespace) -> list[Check]:
    return [_python_check(), *await _node_checks(args)]


async def _node_checks(args: argparse.Namespace) -> list[Check]:
    farm_node = _is_farm_node(args)
    flags: dict[str, Any] = {"data_dir": args.data_dir, "mqtt_url": args.mqtt_url}
    if farm_node:
        flags |= {"farm_id": args.farm_id, "modbus_url": args.modbus_url, "discovery_url": args.discovery_url}
    model: type[ServiceSettings] = AgentSettings if farm_node else DiscoverySettings
    checks: list[Check] = []
    try:
        settings = load_settings(model, config_file=args.config, flags=flags)
    except ConfigError as exc:
        return [Check("config", FAIL, str(exc)), *await _environment_checks(args, None, farm_node)]
    where = f" from {args.config}" if args.config else ""
    if isinstance(settings, AgentSettings):
        checks.append(Check("config", OK, f"farm {settings.farm_id}{where}"))
        checks += await _broker_checks(settings.mqtt())
        checks.append(await _modbus_check(settings))
        if settings.sms_device:
            checks.append(await _sms_check(settings))
        if settings.discovery_url:
            checks.append(_http_check("discovery API", settings.discovery_url))
    elif isinstance(settings, DiscoverySettings):
        checks.append(Check("config", OK, f"discovery node{where}, REST API port {settings.api_port}"))
        checks += await _discovery_broker_checks(settings)
        database = await asyncio.to_thread(_database_check, settings)
        checks.append(database)
        checks.append(_http_check("discovery API", f"http://127.0.0.1:{settings.api_port}"))
        if database.status == OK:  # the channels are in that database
            checks.append(await asyncio.to_thread(_alert_channels_check, settings))
        else:
            checks.append(Check("alert channels", SKIP, "the database does not answer"))
    return checks + await _environment_checks(args, settings, farm_node)


def _is_farm_node(args: argparse.Namespace) -> bool:
    if args.farm_id or os.environ.get("FARM_ID") or args.modbus_url:
        return True
    if args.config:
        try:
            data = yaml.safe_load(Path(args.config).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            return False
        return isinstance(data, dict) and "farm" in data
    return False


async def _broker_checks(url: MqttUrl) -> list[Check]:
    target = f"{url.host}:{url.port}"
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(url.host, url.port), TIMEOUT_S)
        writer.close()
    except (OSError, TimeoutError) as exc:
        reason = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        return [Check("broker reachable", FAIL, f"{target}: {reason}"),
                Check("broker credentials", SKIP, "the broker is not reachable")]
    checks = [Check("broker reachable", OK, target)]
    try:
        client = async_client(url, f"kubmesh-doctor-{os.getpid()}")
        client.timeout = TIMEOUT_S
        async with client:
            pass
    except aiomqtt.MqttError as exc:
        checks.append(Check("broker credentials", FAIL, f"{url.username or 'anonymous'} refused: {exc}"))
    else:
        checks.append(Check("broker credentials", OK, f"{url.username or 'anonymous'} accepted"
                            + (" over TLS" if url.tls else "")))
    return checks


async def _discovery_broker_checks(settings: DiscoverySettings) -> list[Check]:
    if not settings.embedded_broker:
        return await _broker_checks(settings.mqtt())
    checks = (await _broker_checks(MqttUrl(host="127.0.0.1", port=settings.mqtt_port)))[:1]
    try:
        count = len(IdentityStore(settings.data_dir).all())
    except StoreError as exc:
        return [*checks, Check("broker identities", FAIL, str(exc))]
    status = OK if count else FAIL
    return [*checks, Check("broker identities", status, f"{count} in {settings.data_dir / 'identities.json'}"
                           + ("" if count else ": add farms with kubmesh farm add"))]


def _alert_channels_check(settings: DiscoverySettings) -> Check:
    """Whether anyone is told of alerts, and which channels failed their last delivery."""
    with opened_storage(settings, migrate=False) as storage:  # the doctor changes nothing
        if not storage.has(ALERTS_FILE):
            return Check("alert channels", SKIP, "no one is told of alerts yet: kubmesh notify add USER URL")
        with opened_alert_store(storage) as store:
            channels = store.channels()
    if not channels:
        return Check("alert channels", SKIP, "no one is told of alerts yet: kubmesh notify add USER URL")
    failing = [c for c in channels if c.failing]
    if failing:
        return Check("alert channels", FAIL, "; ".join(
            f"{c.username} {display(c.url)} failing ×{c.failures}: {c.last_error}" for c in failing))
    users = len({c.username for c in channels})
    return Check("alert channels", OK, f"{len(channels)} channel(s) of {users} user(s), none failing")


async def _modbus_check(settings: AgentSettings) -> Check:
    try:
        profile = load_profile(settings.profile)
    except ProfileError as exc:
        return Check("Modbus", FAIL, str(exc))
    link = ModbusLink(ModbusUrl.parse(settings.modbus_url, profile.link))
    poller = Poller(profile, link)
    try:
        firmware = await poller.read_firmware()
        result = await poller.poll()
    except ModbusFailure as exc:
        return Check("Modbus", FAIL, f"{link.url}: {exc}")
    finally:
        link.close()
    known = sum(1 for v in result.values.values() if v is not None)
    return Check("Modbus", OK, f"{link.url}: {profile.model} firmware {firmware or '?'}, {known} values read")


async def _sms_check(settings: AgentSettings) -> Check:
    assert settings.sms_device is not None
    numbers = f"{len(settings.sms_numbers)} number(s) to text"
    status = await asyncio.to_thread(_running_agent_sms, settings.api_port)
    if status is not None:
        where = "the running agent says"
    else:  # no agent holds the port: ask the modem
        where = "the modem says"
        modem = make_modem(settings.sms_device, settings.sms_connection)
        try:
            answer = await modem.status()
        except ModemError as exc:
            return Check("SMS modem", FAIL, f"{exc}; {numbers}")
        finally:
            await modem.close()
        status = SmsStatus(device=settings.sms_device, ok=True, registered=answer.registered,
                           network=answer.network, signal_percent=answer.signal_percent,
                           error=None if answer.registered else "not registered on a network")
    if not status.ok or not status.registered:
        return Check("SMS modem", FAIL, f"{status.device}: {status.error or 'not registered'} ({where}); {numbers}")
    signal = f"signal {status.signal_percent}%" if status.signal_percent is not None else "signal unknown"
    last = f", last SMS {format_ts(status.last_sms)}" if status.last_sms else ""
    return Check("SMS modem", OK, f"{status.device}: registered on {status.network or '?'}, {signal}{last} "
                                  f"({where}); {numbers}")


def _running_agent_sms(port: int) -> SmsStatus | None:
    """The modem as the agent on this machine sees it, or None when no agent with a modem answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=TIMEOUT_S) as response:
            body = json.load(response)
    except (urllib.error.URLError, OSError, ValueError):
        return None
    sms = body.get("sms") if isinstance(body, dict) else None
    try:
        return SmsStatus.model_validate(sms) if sms else None
    except ValueError:
        return None


def _database_check(settings: DiscoverySettings) -> Check:
    """The node's storage answers (a round trip to PostgreSQL, with its schema version; the SQLite file opens)."""
    try:
        return Check("database", OK, open_storage(settings).check())
    except ImportError:
        return Check("database", FAIL, "DATABASE_URL names PostgreSQL but psycopg is not installed: "
                                       "pip install 'kubmesh[postgres]'")
    except Exception as exc:  # any driver's error: the reason is what the operator needs
        return Check("database", FAIL, str(exc).strip() or type(exc).__name__)


def _http_check(name: str, base_url: str) -> Check:
    url = base_url.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            body = json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return Check(name, FAIL, f"{url}: {getattr(exc, 'reason', exc)}")
    status = body.get("status") if isinstance(body, dict) else None
    return Check(name, OK if status == "ok" else FAIL, f"{url}: {status}")


async def _environment_checks(
    args: argparse.Namespace, settings: ServiceSettings | None, farm_node: bool
) -> list[Check]:
    discovery_url = getattr(settings, "discovery_url", None) or args.discovery_url
    if isinstance(settings, DiscoverySettings):
        discovery_url = f"http://127.0.0.1:{settings.api_port}"
    cli = args.tailscale_cli or os.environ.get("TAILSCALE_CLI") or str(getattr(settings, "tailscale_cli", "tailscale"))
    data_dir = settings.data_dir if settings else Path(args.data_dir or "./kubmesh-data")
    return [
        await _tailscale_check(cli, "tag:farm" if farm_node else "tag:discovery"),
        await asyncio.to_thread(_clock_check, discovery_url),
        _disk_check(data_dir),
    ]


async def _tailscale_check(cli: str, tag: str) -> Check:
    if shutil.which(cli) is None:
        return Check("tailscale", SKIP, f"{cli} is not installed (the node is not on a tailnet)")
    try:
        status = await TailscaleCli(cli).status()
    except TailscaleCliError as exc:
        return Check("tailscale", FAIL, str(exc))
    if not status.running:
        return Check("tailscale", FAIL, f"tailscaled is {status.backend_state or 'not running'}")
    me = status.self_
    name = me.dns_name.rstrip(".") if me else "?"
    if me is None or tag not in me.tags:
        tags = ", ".join(me.tags) if me and me.tags else "none"
        return Check("tailscale", FAIL, f"{name} is up but not tagged {tag} (tags: {tags})")
    return Check("tailscale", OK, f"{name} up, tagged {tag}, {', '.join(status.tailscale_ips[:1])}")


def _clock_check(reference_url: str | None) -> Check:
    now = datetime.now(UTC)
    if now < EARLIEST_SANE:
        return Check("clock", FAIL, f"the clock reads {now:%Y-%m-%d %H:%M:%S} UTC")
    if not reference_url:
        return Check("clock", SKIP, f"{now:%Y-%m-%d %H:%M:%S} UTC; no discovery node to compare with")
    try:
        with urllib.request.urlopen(reference_url.rstrip("/") + "/health", timeout=TIMEOUT_S) as response:
            date = response.headers.get("Date")
    except (urllib.error.URLError, OSError) as exc:
        return Check("clock", SKIP, f"cannot read the discovery node's time: {getattr(exc, 'reason', exc)}")
    if not date:
        return Check("clock", SKIP, "the discovery node sent no Date header")
    skew = (datetime.now(UTC) - email.utils.parsedate_to_datetime(date)).total_seconds()
    status = OK if abs(skew) <= CLOCK_SKEW_MAX_S else FAIL
    return Check("clock", status, f"{skew:+.0f} s against the discovery node (limit ±{CLOCK_SKEW_MAX_S:.0f} s)")


def _disk_check(data_dir: Path) -> Check:
    path = data_dir.resolve()
    while not path.exists():
        path = path.parent
    usage = shutil.disk_usage(path)
    free_mb = usage.free / 1024 / 1024
    share = usage.free / usage.total if usage.total else 0
    ok = usage.free >= MIN_FREE_BYTES and share >= MIN_FREE_SHARE
    return Check("disk", OK if ok else FAIL, f"{free_mb:.0f} MB free ({share:.0%}) at {path}")

