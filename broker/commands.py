"""``kubmesh broker``: the embedded MQTT broker alone; ``kubmesh broker export-mosquitto DIR``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from broker.acl import AclRules
from broker.mosquitto import export_mosquitto
from broker.server import BrokerSettings, run_broker
from broker.tuning import use_fast_event_loop
from common.identities import IdentityStore, StoreError
from common.service import add_service_options, run_service
from common.settings import load_settings
from contract.topics import Topics


def add_broker_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mqtt-host", metavar="ADDR", help="address the broker listens on (default 0.0.0.0)")
    parser.add_argument("--mqtt-port", type=int, metavar="N", help="MQTT port (default 1883)")
    parser.add_argument("--mqtt-tls-port", type=int, metavar="N", help="MQTT over TLS port (default 8883)")
    parser.add_argument("--tls-certfile", metavar="FILE", help="certificate (PEM) for the TLS listener")
    parser.add_argument("--tls-keyfile", metavar="FILE", help="private key (PEM) for the TLS listener")


BROKER_FLAGS = ("mqtt_host", "mqtt_port", "mqtt_tls_port", "tls_certfile", "tls_keyfile")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("broker", help="run the embedded MQTT broker alone")
    add_service_options(parser)
    add_broker_options(parser)
    parser.set_defaults(func=_run)
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    export = actions.add_parser(
        "export-mosquitto", help="write a Mosquitto password file and ACL file equivalent to this broker's rules"
    )
    export.add_argument("directory", metavar="DIR", help="where mosquitto.passwd and mosquitto.acl are written")
    export.add_argument("--config", metavar="FILE", help="YAML configuration file (base topic, data dir)")
    export.add_argument("--data-dir", metavar="DIR", help="the discovery node's data dir (default ./kubmesh-data)")
    export.set_defaults(func=_export)


def _run(args: argparse.Namespace) -> int:
    use_fast_event_loop()
    return run_service(args, BrokerSettings, BROKER_FLAGS, run_broker)


def _export(args: argparse.Namespace) -> int:
    settings = load_settings(BrokerSettings, config_file=args.config, flags={"data_dir": args.data_dir})
    rules = AclRules(Topics(settings.base_topic), settings.ha_prefix)
    try:
        result = export_mosquitto(IdentityStore(settings.data_dir), rules, Path(args.directory))
    except StoreError as exc:
        print(f"kubmesh: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"kubmesh: cannot write to {args.directory}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"{result.password_file}: {len(result.exported)} identities")
    print(f"{result.acl_file}: their topic rules")
    for username in result.skipped:
        print(f"kubmesh: {username} has no Mosquitto hash (made before the export existed); "
              f"rotate its secret (kubmesh farm rotate / kubmesh user rotate) to include it", file=sys.stderr)
    return 0
