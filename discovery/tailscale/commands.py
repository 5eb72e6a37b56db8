"""``kubmesh tailscale acl`` and ``kubmesh tailscale status``, and the auth key of ``farm add``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from common.identities import IdentityStore
from common.settings import ConfigError, load_settings
from common.tailscale.local import TailscaleCli, TailscaleCliError
from common.tailscale.models import AuthKey
from discovery.registry import FILE as REGISTRY_FILE
from discovery.registry import SCHEMA as REGISTRY_SCHEMA
from discovery.registry import Registry
from discovery.settings import DiscoverySettings
from discovery.storage import Storage, opened_database, opened_storage
from discovery.tailscale.api import TailscaleApi, TailscaleApiError
from discovery.tailscale.manager import known_farms
from discovery.tailscale.matching import FARM_TAG, farms_summary
from discovery.tailscale.policy import recommended_policy
from discovery.tailscale.store import FILE as TAILNET_FILE
from discovery.tailscale.store import SCHEMA as TAILNET_SCHEMA
from discovery.tailscale.store import TailnetStore

AUTHKEY_EXPIRY_S = 86400


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("tailscale", help="the tailnet: recommended policy, what the node knows")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    acl = actions.add_parser("acl", help="print the recommended Tailscale policy (JSON) for the three tags")
    acl.add_argument("--tag-owner", default="autogroup:admin", help="who may apply the tags (default autogroup:admin)")
    acl.set_defaults(func=_acl)
    status = actions.add_parser("status", help="own name, IPs, tags, peers, and the farms matched at the last sync")
    status.add_argument("--config", metavar="FILE", help="the discovery node's config.yaml")
    status.add_argument("--data-dir", metavar="DIR", help="the discovery node's data dir (default ./kubmesh-data)")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_status)


def _acl(args: argparse.Namespace) -> int:
    print(json.dumps(recommended_policy(args.tag_owner), indent=2))
    return 0


def _settings(args: argparse.Namespace) -> DiscoverySettings:
    return load_settings(DiscoverySettings, config_file=args.config, flags={"data_dir": args.data_dir})


def _status(args: argparse.Namespace) -> int:
    settings = _settings(args)
    report: dict[str, Any] = {"local": None, "local_error": None}
    try:
        local = asyncio.run(TailscaleCli(settings.tailscale_cli).status())
        me = local.self_
        report["local"] = {
            "backend_state": local.backend_state,
            "tailnet": local.current_tailnet.name if local.current_tailnet else None,
            "name": me.dns_name.rstrip(".") if me else None,
            "ips": local.tailscale_ips,
            "tags": me.tags if me else [],
            "peers": [{"name": p.dns_name.rstrip("."), "ips": p.tailscale_ips, "tags": p.tags, "online": p.online}
                      for p in sorted(local.peer.values(), key=lambda p: p.dns_name)],
        }
    except TailscaleCliError as exc:
        report["local_error"] = str(exc)
    with opened_storage(settings, migrate=False) as storage:  # a status changes nothing
        farm_ids = _farm_ids(storage, IdentityStore(settings.data_dir))
        devices, report["last_sync"] = [], None
        if storage.has(TAILNET_FILE):
            with opened_database(storage, TAILNET_FILE, TAILNET_SCHEMA) as db:
                store = TailnetStore(db)
                devices, report["last_sync"] = store.devices(), store.last_sync()
    report["farms"] = farms_summary(devices, farm_ids)
    report["devices"] = devices
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        _print_status(report)
    return 0 if report["local"] else 1


def _farm_ids(storage: Storage, identities: IdentityStore) -> set[str]:
    if not storage.has(REGISTRY_FILE):
        return known_farms(None, identities)
    with opened_database(storage, REGISTRY_FILE, REGISTRY_SCHEMA) as db:
        return known_farms(Registry(db), identities)


def _print_status(report: dict[str, Any]) -> None:
    local = report["local"]
    if local:
        print(f"this node: {local['name'] or '?'} ({local['backend_state']}) tailnet {local['tailnet'] or '?'}")
        print(f"  ips: {', '.join(local['ips']) or '-'}  tags: {', '.join(local['tags']) or '-'}")
        for peer in local["peers"]:
            print(f"  peer {peer['name']:<40} {'online ' if peer['online'] else 'offline'} "
                  f"{', '.join(peer['ips'][:1])}  {' '.join(peer['tags'])}")
    else:
        print(f"this node: tailscaled not available ({report['local_error']})")
    sync = report["last_sync"]
    print(f"last sync: {sync['synced_at']} from {sync['source']}" if sync and sync["synced_at"] else "last sync: never")
    names = {d["id"]: d["name"] or d["hostname"] for d in report["devices"]}
    for farm_id, farm in report["farms"].items():
        device = names.get(farm["device"], "-")
        print(f"  farm {farm_id:<24} device {device:<40} {', '.join(farm['flags']) or 'ok'}")


def mint_farm_authkey(farm_id: str, config_file: str | None, data_dir: str | None) -> AuthKey:
    """A pre-authorised key tagged ``tag:farm`` for enrolling this farm (``tailscale up --authkey``)."""
    settings = load_settings(DiscoverySettings, config_file=config_file, flags={"data_dir": data_dir})
    if not settings.tailscale_api_key:
        raise ConfigError("--tailscale-authkey needs TAILSCALE_API_KEY (or api_key in config.yaml)")
    api = TailscaleApi(settings.tailscale_api_key, settings.tailnet or "-", settings.tailscale_api_url)
    return asyncio.run(api.create_auth_key([FARM_TAG], f"kubmesh {farm_id}", AUTHKEY_EXPIRY_S))


def authkey_failure(exc: TailscaleApiError) -> int:
    print(f"kubmesh: could not create a Tailscale auth key: {exc}; nothing was changed", file=sys.stderr)
    return 1
