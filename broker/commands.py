"""``kubmesh broker``: the embedded MQTT broker alone."""

from __future__ import annotations

import argparse

from broker.server import BrokerSettings, run_broker
from broker.tuning import use_fast_event_loop
from kubmesh.cli import add_service_options, run_service


def add_broker_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mqtt-host", metavar="ADDR", help="address the broker listens on (default 0.0.0.0)")
    parser.add_argument("--mqtt-port", type=int, metavar="N", help="MQTT port (default 1883)")
    parser.add_argument("--mqtt-tls-port", type=int, metavar="N", help="MQTT over TLS port (default 8883)")
    parser.add_argument("--tls-certfile", metavar="FILE", help="certificate (PEM) for the TLS listener")
    parser.add_argument("--tls-keyfile", metavar="FILE", help="private key (PEM) for the TLS listener")


BROKER_FLAGS = ("mqtt_host", "mqtt_port", "mqtt_tls_port", "tls_certfile", "tls_keyfile")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("broker", help="run the embedded MQTT broker alone")
    add_service_options(parser)
    add_broker_options(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    use_fast_event_loop()
    return run_service(args, BrokerSettings, BROKER_FLAGS, run_broker)
