"""The ``kubmesh`` command: parses arguments and hands over to the package that does the work."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

from kubmesh.logs import setup_logging
from kubmesh.runtime import run_until_signalled
from kubmesh.settings import ConfigError, ServiceSettings, load_settings

S = TypeVar("S", bound=ServiceSettings)

# Each module has ``register(subparsers)``, which adds its commands with a ``func(args) -> int``.
COMMAND_MODULES = (
    "kubmesh.demo",
    "broker.commands",
    "discovery.commands",
    "farm_agent.commands",
    "farm_agent.simulator",
    "mobile_web.commands",
    "kubmesh.identity_commands",
    "discovery.tailscale.commands",
    "kubmesh.doctor",
)


def add_service_options(parser: argparse.ArgumentParser) -> None:
    """The options every service takes (CONTRACT.md): flags win over environment and file."""
    parser.add_argument("--config", metavar="FILE", help="YAML configuration file")
    parser.add_argument(
        "--data-dir", metavar="DIR", help="where SQLite files and buffers live (default ./kubmesh-data)"
    )
    parser.add_argument("--mqtt-url", metavar="URL", help="broker URL, mqtt://user:pass@host:1883 or mqtts://…")
    parser.add_argument("--log-level", metavar="LEVEL", help="DEBUG, INFO, WARNING or ERROR")
    parser.add_argument("--log-json", action="store_true", default=None, help="one JSON object per log line")


def service_flags(args: argparse.Namespace, *names: str) -> dict[str, object]:
    """The flags given on the command line, as settings fields (None = not given)."""
    fields = ("data_dir", "mqtt_url", "log_level", "log_json", *names)
    return {name: getattr(args, name, None) for name in fields}


def run_service(
    args: argparse.Namespace,
    model: type[S],
    flag_names: tuple[str, ...],
    service: Callable[[S, asyncio.Event], Awaitable[None]],
) -> int:
    """Load ``model`` from the file, environment and flags, set up logging, and run until signalled."""
    settings = load_settings(model, config_file=args.config, flags=service_flags(args, *flag_names))
    setup_logging(settings.log_level, settings.log_json)
    return run_until_signalled(lambda stop: service(settings, stop))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubmesh", description="KUB-1063 farms over an MQTT mesh")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["mobile-web"]:
        # gevent serves the web front end; its monkey patching must precede every socket/thread import
        from gevent import monkey

        monkey.patch_all()
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"kubmesh {args.command}: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
