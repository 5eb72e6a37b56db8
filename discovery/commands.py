"""``kubmesh discovery``: the discovery node."""

from __future__ import annotations

import argparse

from broker.commands import BROKER_FLAGS, add_broker_options
from broker.tuning import use_fast_event_loop
from common.service import add_service_options, run_service
from discovery.service import run_discovery
from discovery.settings import DiscoverySettings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("discovery", help="run the discovery node (REST API, registry, embedded broker)")
    add_service_options(parser)
    add_broker_options(parser)
    parser.add_argument("--host", dest="api_host", help="address of the REST API (default 0.0.0.0)")
    parser.add_argument("--port", dest="api_port", type=int, help="port of the REST API (default 8082)")
    parser.add_argument("--api-token", help="the static Bearer token of the REST API (API_TOKEN)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    use_fast_event_loop()  # the discovery node runs the embedded broker unless MQTT_URL names another
    return run_service(args, DiscoverySettings, (*BROKER_FLAGS, "api_host", "api_port", "api_token"), run_discovery)
