"""The alerting built from the discovery node's settings."""

from __future__ import annotations

from common.identities import IdentityStore
from common.settings import ConfigError
from contract.payloads import Clock
from contract.topics import Topics
from discovery.alerting.channels import Channels
from discovery.alerting.engine import Timing
from discovery.alerting.rules import RulesError, load_rules
from discovery.alerting.service import AlertingConfig, AlertingService
from discovery.alerting.store import FILE, SCHEMA, AlertStore
from discovery.alerting.webpush import WebPushSender, vapid_keys
from discovery.settings import DiscoverySettings
from discovery.storage import Storage

SENDER_PROCESSES = 2  # sending's CPU kept off the node's own interpreter (and its broker): see channels.py


def build_alerting(settings: DiscoverySettings, identities: IdentityStore, topics: Topics, clock: Clock,
                   storage: Storage) -> AlertingService:
    """A bad rules file stops the node at start (ConfigError), naming the file and the rule."""
    try:
        book = load_rules(settings.alert_rules)
    except RulesError as exc:
        raise ConfigError(str(exc)) from None
    config = AlertingConfig(
        Timing(settings.alert_delay, settings.alert_remind_interval, settings.alert_escalate_after),
        settings.alert_silent_after, book, settings.alert_link_url,
        tick_interval=min(1.0, max(0.1, settings.alert_delay / 10)),
    )
    channels = Channels(WebPushSender(vapid_keys(settings.data_dir)), retries=settings.alert_retries,
                        backoff=settings.alert_retry_backoff, processes=SENDER_PROCESSES)
    return AlertingService(config, AlertStore(storage.database(FILE, SCHEMA)), identities, topics, channels, clock)
