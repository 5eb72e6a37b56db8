"""``kubmesh notify add|list|remove|test``: who is told about alerts, through which channels.

They edit the alert store of the discovery node's storage (``alerts.db`` in its data dir, or the PostgreSQL
that ``DATABASE_URL`` names, shared by every node); the running node reads channels afresh for every message,
so a change counts at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from common.identities import IdentityStore, StoreError
from common.settings import load_settings
from contract.payloads import utc_now
from discovery.alerting.channels import Channels, Delivery, check_url, display
from discovery.alerting.compose import Reader, test_message
from discovery.alerting.kinds import Severity
from discovery.alerting.store import AlertStore, Step, opened_alert_store
from discovery.alerting.webpush import WebPushSender, vapid_keys
from discovery.settings import DiscoverySettings
from discovery.storage import opened_storage

QUIET_PATTERN = re.compile(r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d$")


def register(subparsers: argparse._SubParsersAction) -> None:
    notify = subparsers.add_parser("notify", help="manage who is told about alerts, and through which channels")
    actions = notify.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="give a user a channel (an Apprise URL, or a webpush+ subscription)")
    add.add_argument("username")
    add.add_argument("url")
    add.add_argument("--severity", choices=[s.value for s in Severity], default=Severity.WARNING.value,
                     help="the lowest severity sent to this channel (default warning: everything)")
    add.add_argument("--tier", type=int, choices=(1, 2), default=1,
                     help="1: told first; 2: told when tier 1 has not acknowledged in time")
    add.add_argument("--language", choices=("ru", "en"), help="the user's language (default ru)")
    add.add_argument("--quiet", metavar="HH:MM-HH:MM",
                     help="the user's quiet hours, when warnings wait and critical alerts still go ('' for none)")
    add.add_argument("--timezone", metavar="ZONE", help="the user's time zone for quiet hours (default the node's)")
    add.set_defaults(func=_add)
    listing = actions.add_parser("list", help="list channels, with each one's state")
    listing.add_argument("username", nargs="?")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=_list)
    remove = actions.add_parser("remove", help="remove a user's channel")
    remove.add_argument("username")
    remove.add_argument("url")
    remove.set_defaults(func=_remove)
    test = actions.add_parser("test", help="send a test message through each of a user's channels; exit 1 if any fails")
    test.add_argument("username")
    test.set_defaults(func=_test)
    for parser in (add, listing, remove, test):
        parser.add_argument("--data-dir", help="the discovery node's data dir (default ./kubmesh-data)")


def _settings(args: argparse.Namespace) -> DiscoverySettings:
    return load_settings(DiscoverySettings, flags={"data_dir": args.data_dir})


@contextmanager
def _store(settings: DiscoverySettings) -> Iterator[AlertStore]:
    with opened_storage(settings) as storage, opened_alert_store(storage) as store:
        yield store


def _fail(message: str) -> int:
    print(f"kubmesh notify: {message}", file=sys.stderr)
    return 1


def _check_person(settings: DiscoverySettings, username: str) -> str | None:
    try:
        identity = IdentityStore(settings.data_dir).get(username)
    except StoreError as exc:
        return str(exc)
    if identity is None or not identity.role.is_person:
        return f"no user {username!r}: make one with kubmesh user add"
    return None


def _add(args: argparse.Namespace) -> int:
    settings = _settings(args)
    problem = _check_person(settings, args.username) or check_url(args.url)
    if args.quiet and not QUIET_PATTERN.fullmatch(args.quiet):
        problem = problem or f"quiet hours are HH:MM-HH:MM (22:00-06:00), not {args.quiet!r}"
    if problem:
        return _fail(problem)
    with _store(settings) as store:
        store.add_channel(args.username, args.url, Severity(args.severity), args.tier)
        preferences: dict[str, str | None] = {}
        if args.language:
            preferences["language"] = args.language
        if args.quiet is not None:
            start, _, end = args.quiet.partition("-")
            preferences |= {"quiet_start": start or None, "quiet_end": end or None}
        if args.timezone:
            preferences["timezone"] = args.timezone
        if preferences:
            store.set_preferences(args.username, **preferences)
    print(f"{args.username}: tier {args.tier}, {args.severity} and above, via {display(args.url)}")
    return 0


def _list(args: argparse.Namespace) -> int:
    with _store(_settings(args)) as store:
        channels, recipients = store.channels(args.username), store.recipients()
    rows = [{"username": c.username, "url": display(c.url), "tier": c.tier, "severity": c.severity.value,
             "state": "failing" if c.failing else "ok", "failures": c.failures, "last_error": c.last_error,
             "language": recipients[c.username].language if c.username in recipients else "ru"} for c in channels]
    if args.json:
        print(json.dumps(rows))
        return 0
    for row in rows:
        state = f"FAILING ×{row['failures']}: {row['last_error']}" if row["state"] == "failing" else "ok"
        print(f"{row['username']:<16} tier {row['tier']}  {row['severity']:<8} {row['language']}  {row['url']}  "
              f"{state}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    with _store(_settings(args)) as store:
        removed = store.remove_channel(args.username, args.url)
    if not removed:
        return _fail(f"{args.username} has no channel {display(args.url)}")
    print(f"removed {display(args.url)} of {args.username}")
    return 0


def _test(args: argparse.Namespace) -> int:
    settings = _settings(args)
    with _store(settings) as store:
        channels = store.channels(args.username)
        if not channels:
            return _fail(f"{args.username} has no channel: add one with kubmesh notify add")
        recipient = store.recipients().get(args.username)
        reader = Reader(recipient.language, recipient.timezone) if recipient else Reader()
        urls = [c.url for c in channels]
        deliveries = asyncio.run(_send_tests(settings.data_dir, urls, reader))
        failures = _record_tests(store, args.username, urls, deliveries)
    return 1 if failures else 0


async def _send_tests(data_dir: Path, urls: list[str], reader: Reader) -> list[Delivery]:
    sender = Channels(WebPushSender(vapid_keys(data_dir)), retries=1, backoff=0.5)
    message = test_message(reader)
    try:
        return list(await asyncio.gather(*(sender.deliver(url, message) for url in urls)))
    finally:
        sender.close()


def _record_tests(store: AlertStore, username: str, urls: list[str], deliveries: list[Delivery]) -> int:
    """Each test as a step and as its channel's last result (blocking: the store's, off any event loop)."""
    now = utc_now()
    failures = 0
    for url, delivery in zip(urls, deliveries, strict=True):
        store.record([Step(now, None, (), "test", username, display(url), delivery.ok, delivery.error)])
        store.channel_result(username, url, delivery.ok, delivery.error, now)
        outcome = "ok    " if delivery.ok else "FAILED"
        print(f"{outcome} {display(url)}{'' if delivery.ok else ': ' + str(delivery.error)}")
        failures += not delivery.ok
    return failures
