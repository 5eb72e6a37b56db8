"""The mobile web's settings."""

from __future__ import annotations

import os
import secrets
from typing import ClassVar

from pydantic import Field, field_validator

from common.settings import ServiceSettings
from mobile_web.login_throttle import parse_networks


class WebSettings(ServiceSettings):
    ENV: ClassVar[dict[str, str]] = {
        "SECRET_KEY": "secret_key",
        "DISCOVERY_SERVICE_URL": "discovery_url",
        "DISCOVERY_API_TOKEN": "discovery_token",
        "POLL_INTERVAL": "poll_interval",
        "TAILNET_WHOIS": "tailnet_whois",
        "TAILSCALE_CLI": "tailscale_cli",
    }
    YAML: ClassVar[dict[str, str]] = {
        **ServiceSettings.YAML,
        "web.host": "host",
        "web.port": "port",
        "discovery.service_url": "discovery_url",
        "discovery.api_token": "discovery_token",
    }

    host: str = "0.0.0.0"
    port: int = Field(5000, ge=0, le=65535)
    secret_key: str | None = None
    discovery_url: str | None = None  # where the charts' history comes from (the discovery REST API)
    discovery_token: str | None = None  # this service's bearer token for that API
    poll_interval: float = Field(5.0, gt=0)
    secure_cookies: bool = False  # set when served over HTTPS
    login_limit: str = "5 per minute"  # failed logins per (client address, username)
    login_delay_max_s: float = Field(4.0, ge=0)  # the most a failed login makes the next one of its name wait
    # proxies whose X-Forwarded-For names the caller (e.g. 127.0.0.1 for `tailscale serve` on this host)
    trusted_proxies: list[str] = Field(default_factory=list)
    health_silence_s: float = Field(120.0, gt=0)  # /health is degraded after this long without a message
    tailnet_whois: bool = False  # tie requests to the caller's tailnet identity (tailscale whois)
    tailnet_refuse_tags: list[str] = Field(default_factory=lambda: ["tag:farm"])
    tailscale_cli: str = "tailscale"

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, entries: object) -> object:
        if isinstance(entries, str):  # from the environment: "127.0.0.1,::1"
            entries = [entry.strip() for entry in entries.split(",") if entry.strip()]
        if isinstance(entries, list) and all(isinstance(entry, str) for entry in entries):
            parse_networks(entries)
        return entries

    def session_secret(self) -> str:
        """SECRET_KEY, or one made once and kept in the data dir so sessions survive restarts."""
        if self.secret_key:
            return self.secret_key
        path = self.data_dir / "web_secret"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_hex(32))
        return path.read_text().strip()
