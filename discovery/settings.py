"""The discovery node's settings; the owner's ``config.yaml`` keys keep working."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import ClassVar

from pydantic import Field, field_validator

from broker.server import BrokerSettings
from discovery.tailscale.api import DEFAULT_API_URL


class DiscoverySettings(BrokerSettings):
    ENV: ClassVar[dict[str, str]] = {
        **BrokerSettings.ENV,
        "API_TOKEN": "api_token",
        "TAILNET": "tailnet",
        "TAILSCALE_API_KEY": "tailscale_api_key",
        "DATABASE_PATH": "database_path",
        "SYNC_INTERVAL": "sync_interval",
        "TAILSCALE_API_URL": "tailscale_api_url",
        "TAILSCALE_CLI": "tailscale_cli",
        "TAILSCALE_SYNC": "tailscale_sync",
        "HISTORY_RAW_DAYS": "history_raw_days",
        "HISTORY_ROLLUP_SECONDS": "history_rollup_seconds",
        "HISTORY_KEEP_DAYS": "history_keep_days",
        "ALERT_DELAY": "alert_delay",
        "ALERT_REMIND_INTERVAL": "alert_remind_interval",
        "ALERT_ESCALATE_AFTER": "alert_escalate_after",
        "ALERT_SILENT_AFTER": "alert_silent_after",
        "ALERT_RULES": "alert_rules",
        "ALERT_LINK_URL": "alert_link_url",
        "ALERT_RETRIES": "alert_retries",
        "ALERT_RETRY_BACKOFF": "alert_retry_backoff",
        "DATABASE_URL": "database_url",
        "NODE_NAME": "node_name",
        "LEASE_INTERVAL": "lease_interval",
    }
    YAML: ClassVar[dict[str, str]] = {
        **BrokerSettings.YAML,
        "host": "api_host",
        "port": "api_port",
        "api_key": "tailscale_api_key",
        "api_token": "api_token",
        "tailscale.api_url": "tailscale_api_url",
        "tailscale.cli": "tailscale_cli",
        "history.raw_days": "history_raw_days",
        "history.rollup_seconds": "history_rollup_seconds",
        "history.keep_days": "history_keep_days",
        "alerts.delay": "alert_delay",
        "alerts.remind_interval": "alert_remind_interval",
        "alerts.escalate_after": "alert_escalate_after",
        "alerts.silent_after": "alert_silent_after",
        "alerts.rules": "alert_rules",
        "alerts.link_url": "alert_link_url",
        "database_url": "database_url",
        "node_name": "node_name",
    }

    api_host: str = "0.0.0.0"
    api_port: int = Field(8082, ge=0, le=65535)
    api_token: str | None = None
    database_path: Path | None = None  # default: <data_dir>/discovery.db
    tailnet: str | None = None
    tailscale_api_key: str | None = None
    sync_interval: float = Field(300.0, ge=1)
    tailscale_api_url: str = DEFAULT_API_URL
    tailscale_cli: str = "tailscale"
    tailscale_sync: bool | None = None  # None: sync when an API key is set or the tailscale CLI is installed
    tailscale_retry: float = Field(10.0, gt=0)  # first backoff after a failed sync, doubling up to sync_interval
    key_expiry_warning_days: float = Field(14.0, ge=0)
    history_raw_days: float = Field(30.0, gt=0)  # every reading kept this long, then downsampled
    history_rollup_seconds: float = Field(300.0, ge=1)  # one min/max/avg row per value and this many seconds
    history_keep_days: float = Field(365.0, gt=0)  # downsampled rows kept this long
    alert_delay: float = Field(30.0, ge=0)  # a condition must hold this long before its alert opens
    alert_remind_interval: float = Field(600.0, gt=0)  # an open alert is sent again this often until acknowledged
    alert_escalate_after: float = Field(900.0, ge=0)  # not acknowledged this long: tier 2 is told too
    alert_silent_after: float = Field(120.0, gt=0)  # nothing heard from a farm this long: it is silent
    alert_rules: Path | None = None  # value rules (YAML); default: the shipped KUB-1063 rules
    alert_link_url: str | None = None  # the mobile web's address, for the farm link in each message
    alert_retries: int = Field(3, ge=0, le=10)  # a failed delivery is tried again this many times …
    alert_retry_backoff: float = Field(1.0, gt=0)  # … after this many seconds, doubling each time
    # None: SQLite files in the data dir, one node; postgresql://user:pass@host/db: shared by every node
    database_url: str | None = None
    # names this node among several on one broker and database (its MQTT client id); None: the only one
    node_name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,40}$")
    lease_interval: float = Field(5.0, gt=0, le=60)  # how often a node tries to take the one-node duties' lease

    @field_validator("database_url")
    @classmethod
    def _postgresql_only(cls, url: str | None) -> str | None:
        if url and not url.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql://user:password@host/database URL (unset: SQLite)")
        return url or None

    @property
    def database(self) -> Path:
        return self.database_path or self.data_dir / "discovery.db"

    @property
    def tailscale_enabled(self) -> bool:
        if self.tailscale_sync is not None:
            return self.tailscale_sync
        return bool(self.tailscale_api_key) or shutil.which(self.tailscale_cli) is not None

    @property
    def embedded_broker(self) -> bool:
        """Without MQTT_URL the discovery node runs the broker itself."""
        return self.mqtt_url is None
