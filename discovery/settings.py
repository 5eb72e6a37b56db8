"""The discovery node's settings; the owner's ``config.yaml`` keys keep working."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from broker.server import BrokerSettings


class DiscoverySettings(BrokerSettings):
    ENV: ClassVar[dict[str, str]] = {
        **BrokerSettings.ENV,
        "API_TOKEN": "api_token",
        "TAILNET": "tailnet",
        "TAILSCALE_API_KEY": "tailscale_api_key",
        "DATABASE_PATH": "database_path",
    }
    YAML: ClassVar[dict[str, str]] = {
        **BrokerSettings.YAML,
        "host": "api_host",
        "port": "api_port",
        "api_key": "tailscale_api_key",
        "api_token": "api_token",
    }

    api_host: str = "0.0.0.0"
    api_port: int = Field(8082, ge=0, le=65535)
    api_token: str | None = None
    database_path: Path | None = None  # default: <data_dir>/discovery.db
    tailnet: str | None = None
    tailscale_api_key: str | None = None
    sync_interval: float = Field(300.0, ge=10)

    @property
    def database(self) -> Path:
        return self.database_path or self.data_dir / "discovery.db"

    @property
    def embedded_broker(self) -> bool:
        """Without MQTT_URL the discovery node runs the broker itself."""
        return self.mqtt_url is None
