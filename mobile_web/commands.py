"""``kubmesh mobile-web``: the Flask front end for phones."""

from __future__ import annotations

import argparse

from common.logs import setup_logging
from common.service import add_service_options, service_flags
from common.settings import load_settings
from mobile_web.server import serve
from mobile_web.settings import WebSettings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("mobile-web", help="run the mobile web front end")
    add_service_options(parser)
    parser.add_argument("--host", help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port (default 5000)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    settings = load_settings(WebSettings, config_file=args.config, flags=service_flags(args, "host", "port"))
    setup_logging(settings.log_level, settings.log_json)
    return serve(settings)
