"""``kubmesh farm|user|service add|list|remove|rotate`` and ``kubmesh token add|list|remove``.

They edit the identity store of a data dir; a running broker picks the change
up at the next connect. Secrets are printed once and never stored in clear.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

import aiomqtt

from broker.retire import clear_farm
from common.identities import (
    PERSON_ROLES,
    SERVICE_ROLES,
    Credentials,
    IdentityError,
    IdentityStore,
    Role,
    StoreError,
    check_username,
)
from common.mqtt import MqttUrl, MqttUrlError
from contract.topics import HA_DEFAULT_PREFIX, Topics
from discovery.tailscale.api import TailscaleApiError
from discovery.tailscale.commands import authkey_failure, mint_farm_authkey


def register(subparsers: argparse._SubParsersAction) -> None:
    farm = subparsers.add_parser("farm", help="manage farms and their MQTT credentials")
    farm_commands = farm.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = farm_commands.add_parser("add", help="create a farm identity and print its credentials once")
    add.add_argument("farm_id")
    add.add_argument("--owner", required=True)
    add.add_argument("--json", action="store_true", help='print {"farm_id", "username", "password"}')
    add.add_argument("--tailscale-authkey", action="store_true",
                     help="also create a pre-authorised auth key tagged tag:farm for enrolling the farm's device")
    add.add_argument("--config", metavar="FILE", help="the discovery node's config.yaml (tailnet and API key)")
    add.set_defaults(func=_farm_add)
    rotate = farm_commands.add_parser("rotate", help="give a farm a new token; the old one stops working")
    rotate.add_argument("farm_id")
    rotate.add_argument("--json", action="store_true")
    rotate.set_defaults(func=_rotate, roles={Role.FARM}, password=None)
    remove = farm_commands.add_parser(
        "remove", help="remove a farm identity and clear its retained topics and Home Assistant device"
    )
    remove.add_argument("farm_id")
    remove.add_argument("--mqtt-url", metavar="URL",
                        help="the broker to clear the farm's retained topics on (default MQTT_URL or "
                             "mqtt://127.0.0.1:1883; without credentials in it, the farm's own are used)")
    remove.add_argument("--keep-retained", action="store_true", help="leave the farm's retained topics alone")
    remove.set_defaults(func=_farm_remove)
    listing = farm_commands.add_parser("list", help="list farm identities")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=_list, roles={Role.FARM})

    user = subparsers.add_parser("user", help="manage people and tools (Home Assistant, scripts)")
    user_commands = user.add_subparsers(dest="action", required=True, metavar="ACTION")
    uadd = user_commands.add_parser("add", help="create a user for the web and MQTT; prints the password once")
    uadd.add_argument("username")
    uadd.add_argument("--role", required=True, choices=[r.value for r in sorted(PERSON_ROLES)])
    uadd.add_argument("--owner", help="limit the user to this owner's farms")
    uadd.add_argument("--password", help="set this password instead of generating one")
    uadd.add_argument("--json", action="store_true", help='print {"username", "password"}')
    uadd.set_defaults(func=_user_add)
    urotate = user_commands.add_parser("rotate", help="give a user a new password; the old one stops working")
    urotate.add_argument("username")
    urotate.add_argument("--password", help="set this password instead of generating one")
    urotate.add_argument("--json", action="store_true")
    urotate.set_defaults(func=_rotate, roles=set(PERSON_ROLES))
    uremove = user_commands.add_parser("remove", help="remove a user")
    uremove.add_argument("username")
    uremove.set_defaults(func=_user_remove)
    ulist = user_commands.add_parser("list", help="list users")
    ulist.add_argument("--json", action="store_true")
    ulist.set_defaults(func=_list, roles=set(PERSON_ROLES))

    service = subparsers.add_parser("service", help="manage the MQTT identities of services (for an external broker)")
    service_commands = service.add_subparsers(dest="action", required=True, metavar="ACTION")
    sadd = service_commands.add_parser("add", help="create a service identity and print its token once")
    sadd.add_argument("username")
    sadd.add_argument("--role", required=True, choices=[r.value for r in sorted(SERVICE_ROLES)])
    sadd.add_argument("--json", action="store_true", help='print {"username", "password"}')
    sadd.set_defaults(func=_service_add)
    srotate = service_commands.add_parser("rotate", help="give a service a new token")
    srotate.add_argument("username")
    srotate.add_argument("--json", action="store_true")
    srotate.set_defaults(func=_rotate, roles=set(SERVICE_ROLES), password=None)
    slist = service_commands.add_parser("list", help="list service identities")
    slist.add_argument("--json", action="store_true")
    slist.set_defaults(func=_list, roles=set(SERVICE_ROLES))

    token = subparsers.add_parser("token", help="manage Bearer tokens of the discovery REST API")
    token_commands = token.add_subparsers(dest="action", required=True, metavar="ACTION")
    tadd = token_commands.add_parser("add", help="issue a token acting for a user or service; printed once")
    tadd.add_argument("username")
    tadd.add_argument("--json", action="store_true", help='print {"username", "token_id", "token"}')
    tadd.set_defaults(func=_token_add)
    tlist = token_commands.add_parser("list", help="list tokens (never their secrets)")
    tlist.add_argument("--json", action="store_true")
    tlist.set_defaults(func=_token_list)
    tremove = token_commands.add_parser("remove", help="revoke a token")
    tremove.add_argument("token_id")
    tremove.set_defaults(func=_token_remove)

    for parser in (add, rotate, remove, listing, uadd, urotate, uremove, ulist, sadd, srotate, slist, tadd, tlist,
                   tremove):
        parser.add_argument("--data-dir", help="the discovery node's data dir (default ./kubmesh-data)")


def _store(args: argparse.Namespace) -> IdentityStore:
    return IdentityStore(Path(args.data_dir or os.environ.get("DATA_DIR") or "./kubmesh-data"))


def _fail(message: str) -> int:
    print(f"kubmesh: {message}", file=sys.stderr)
    return 1


def _print_credentials(credentials: Credentials, as_json: bool, farm: bool) -> None:
    if as_json:
        out = credentials.as_dict()
        print(json.dumps({"farm_id": credentials.username, **out} if farm else out))
    else:
        print(f"username: {credentials.username}\npassword: {credentials.password}")
        print("The password is shown once; it is stored only as a hash.", file=sys.stderr)


def _farm_add(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        check_username(args.farm_id)
        if store.get(args.farm_id) is not None:
            return _fail(f"{args.farm_id!r} exists already")
    except (IdentityError, StoreError) as exc:
        return _fail(str(exc))
    authkey = None
    if args.tailscale_authkey:
        # the key first: if the tailnet refuses, nothing has been created
        try:
            authkey = mint_farm_authkey(args.farm_id, args.config, args.data_dir)
        except TailscaleApiError as exc:
            return authkey_failure(exc)
    try:
        credentials = store.add(args.farm_id, Role.FARM, owner=args.owner)
    except (IdentityError, StoreError) as exc:
        return _fail(str(exc))
    if authkey is None:
        _print_credentials(credentials, args.json, farm=True)
    elif args.json:
        print(json.dumps({"farm_id": credentials.username, **credentials.as_dict(),
                          "tailscale_authkey": authkey.key,
                          "tailscale_authkey_expires": authkey.expires.isoformat() if authkey.expires else None}))
    else:
        _print_credentials(credentials, False, farm=True)
        print(f"tailscale auth key: {authkey.key}\n  enrol the farm with: tailscale up --authkey {authkey.key} "
              f"--hostname {args.farm_id}")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    store = _store(args)
    name = getattr(args, "farm_id", None) or args.username
    try:
        identity = store.get(name)
        if identity is None or identity.role not in args.roles:
            return _fail(f"no {_kind(args.roles)} {name!r}")
        credentials = store.rotate(name, args.password)
    except (IdentityError, StoreError) as exc:
        return _fail(str(exc))
    _print_credentials(credentials, args.json, farm=identity.role is Role.FARM)
    return 0


def _kind(roles: set[Role]) -> str:
    return "farm" if roles == {Role.FARM} else "service" if roles == set(SERVICE_ROLES) else "user"


def _service_add(args: argparse.Namespace) -> int:
    try:
        credentials = _store(args).add(args.username, Role(args.role))
    except (IdentityError, StoreError) as exc:
        return _fail(str(exc))
    _print_credentials(credentials, args.json, farm=False)
    return 0


def _token_add(args: argparse.Namespace) -> int:
    try:
        token = _store(args).add_api_token(args.username)
    except (IdentityError, StoreError) as exc:
        return _fail(str(exc))
    token_id = token.split("_")[1]
    if args.json:
        print(json.dumps({"username": args.username, "token_id": token_id, "token": token}))
    else:
        print(f"token: {token}")
        print("The token is shown once; it is stored only as a hash.", file=sys.stderr)
    return 0


def _token_list(args: argparse.Namespace) -> int:
    try:
        tokens = _store(args).api_tokens()
    except StoreError as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps([t.model_dump(mode="json", exclude={"secret_hash"}) for t in tokens]))
    else:
        for token in tokens:
            print(f"{token.token_id:<14} {token.username:<24} created {token.created:%Y-%m-%d %H:%M}")
    return 0


def _token_remove(args: argparse.Namespace) -> int:
    try:
        _store(args).remove_api_token(args.token_id)
    except (IdentityError, StoreError) as exc:
        return _fail(str(exc))
    print(f"revoked {args.token_id}")
    return 0


def _user_add(args: argparse.Namespace) -> int:
    try:
        credentials = _store(args).add(args.username, Role(args.role), owner=args.owner, password=args.password)
    except (IdentityError, StoreError) as exc:
        return _fail(str(exc))
    _print_credentials(credentials, args.json, farm=False)
    return 0


def _farm_remove(args: argparse.Namespace) -> int:
    """The farm's retained topics are cleared with its own identity (rotated for this, as its token is not
    kept), which the ACL lets publish exactly there; then the identity goes."""
    store = _store(args)
    try:
        identity = store.get(args.farm_id)
        if identity is None or identity.role is not Role.FARM:
            return _fail(f"no farm {args.farm_id!r}")
        if not args.keep_retained:
            _clear_retained(store, args)
        store.remove(args.farm_id)
    except (IdentityError, StoreError) as exc:
        return _fail(str(exc))
    print(f"removed {args.farm_id}")
    return 0


def _clear_retained(store: IdentityStore, args: argparse.Namespace) -> None:
    try:
        url = MqttUrl.parse(args.mqtt_url or os.environ.get("MQTT_URL") or "mqtt://127.0.0.1:1883")
    except MqttUrlError as exc:
        raise IdentityError(str(exc)) from None
    if not url.username:
        url = url.with_credentials(**store.rotate(args.farm_id).as_dict())
    topics = Topics(os.environ.get("BASE_TOPIC") or "kub")
    prefix = os.environ.get("HA_DISCOVERY_PREFIX") or HA_DEFAULT_PREFIX
    try:
        cleared = asyncio.run(clear_farm(url, topics, prefix, args.farm_id))
    except aiomqtt.MqttError as exc:
        print(f"kubmesh: could not clear the farm's retained topics on {url.redacted()} ({exc}); its Home "
              "Assistant device stays until its config topic is cleared", file=sys.stderr)
        return
    print(f"cleared {len(cleared)} retained topics, including {cleared[0]}")


def _user_remove(args: argparse.Namespace) -> int:
    store = _store(args)
    name = args.username
    try:
        identity = store.get(name)
        if identity is None or not identity.role.is_person:
            return _fail(f"no user {name!r}")
        store.remove(name)
    except (IdentityError, StoreError) as exc:
        return _fail(str(exc))
    print(f"removed {name}")
    return 0


def _list(args: argparse.Namespace) -> int:
    try:
        rows = [i for i in _store(args).all() if i.role in args.roles]
    except StoreError as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps([i.model_dump(mode="json", exclude={"secret_hash", "mosquitto_hash"}) for i in rows]))
    else:
        for identity in rows:
            print(f"{identity.username:<24} {identity.role.value:<10} owner={identity.owner or '-'}")
    return 0
