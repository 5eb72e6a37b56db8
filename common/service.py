"""What every ``kubmesh`` service command shares: its common options, and running it from its settings."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from common.logs import setup_logging
from common.runtime import run_until_signalled
from common.settings import ServiceSettings, load_settings

S = TypeVar("S", bound=ServiceSettings)


def add_service_options(parser: argparse.ArgumentParser) -> None:
    """The options every service takes: flags win over environment and file."""
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
