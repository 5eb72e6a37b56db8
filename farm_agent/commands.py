"""``kubmesh farm-agent``: one farm's agent."""

from __future__ import annotations

import argparse

from common.service import add_service_options, run_service
from common.settings import ConfigError
from farm_agent.profile import ProfileError
from farm_agent.service import run_agent
from farm_agent.settings import AgentSettings

AGENT_FLAGS = (
    "farm_id", "farm_name", "owner_id", "modbus_url", "poll_interval", "max_interval", "profile", "api_host", "api_port"
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("farm-agent", help="run one farm's agent next to its KUB-1063")
    add_service_options(parser)
    parser.add_argument("--farm-id", help="the farm's id (FARM_ID)")
    parser.add_argument("--farm-name", help="a name people recognise (FARM_NAME)")
    parser.add_argument("--owner-id", help="the farm's owner (OWNER_ID)")
    parser.add_argument("--modbus-url", help="tcp://host:502?unit=1 or rtu:///dev/ttyUSB0?baudrate=9600&unit=1")
    parser.add_argument("--poll-interval", type=float, help="seconds between polls (POLL_INTERVAL, default 5)")
    parser.add_argument(
        "--max-interval", type=float,
        help="publish state at least this often even if nothing moved beyond its deadband (default 60; 0: every poll)",
    )
    parser.add_argument("--profile", help="device profile: a shipped name (kub1063) or a YAML file")
    parser.add_argument("--host", dest="api_host", help="address of the local HTTP API (default 0.0.0.0)")
    parser.add_argument("--port", dest="api_port", type=int, help="port of the local HTTP API (default 8080)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        return run_service(args, AgentSettings, AGENT_FLAGS, run_agent)
    except ProfileError as exc:
        raise ConfigError(str(exc)) from None
