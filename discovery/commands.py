"""``kubmesh discovery``: the discovery node."""

from __future__ import annotations

import argparse
import asyncio

from broker.commands import BROKER_FLAGS, add_broker_options
from discovery.service import run_discovery
from discovery.settings import DiscoverySettings
from kubmesh.cli import add_service_options, service_flags
from kubmesh.logs import setup_logging
from kubmesh.runtime import run_until_signalled
from kubmesh.settings import load_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("discovery", help="run the discovery node (REST API, registry, embedded broker)")
    add_service_options(parser)
    add_broker_options(parser)
    parser.add_argument("--host", dest="api_host", help="address of the REST API (default 0.0.0.0)")
    parser.add_argument("--port", dest="api_port", type=int, help="port of the REST API (default 8082)")
    parser.add_argument("--api-token", help="the static Bearer token of the REST API (API_TOKEN)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    flags = service_flags(args, *BROKER_FLAGS, "api_host", "api_port", "api_token")
    settings = load_settings(DiscoverySettings, config_file=args.config, flags=flags)
    setup_logging(settings.log_level, settings.log_json)

    async def service(stop: asyncio.Event) -> None:
        await run_discovery(settings, stop)

    return run_until_signalled(service)
