"""The owner's configuration as the deployment guide writes it (seed/tailscale-deployment-guide.ru.md):
``config.yaml`` of the discovery node, ``farm_config.yaml`` of a farm, and the environment variables."""

from __future__ import annotations

from pathlib import Path

from common.identities import IdentityStore, Role
from common.settings import load_settings
from discovery.settings import DiscoverySettings
from farm_agent.settings import AgentSettings
from tests.helpers import ServiceProcess, free_port, wait_until
from tests.tailscale_api import API_KEY, STANDIN_BIN, FakeTailscaleApi
from tests.test_discovery import TOKEN, Discovery

# verbatim from the guide
CONFIG_YAML = """\
# config.yaml
tailnet: "your-company.ts.net"
api_key: "tskey-api-xxxx"
database_path: "discovery.db"
host: "0.0.0.0"
port: 8082
sync_interval: 300  # Синхронизация с Tailnet каждые 5 минут
"""
FARM_CONFIG_YAML = """\
# farm_config.yaml
farm:
  id: "farm-kub1063-001"
  name: "Ферма КУБ-1063 Теплица №1"
  owner_id: "user_farmer1"
  location: "greenhouse-1"
  capabilities: ["kub1063", "monitoring", "control"]
  api_port: 8080

tailscale:
  tailnet: "your-company.ts.net"
  api_key: "tskey-api-xxxx"

discovery:
  service_url: "http://discovery-service-tailscale-ip:8082"
  heartbeat_interval: 300
"""


def test_the_guides_config_yaml_sets_every_discovery_key(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG_YAML, encoding="utf-8")
    settings = load_settings(DiscoverySettings, config_file=config, env={})
    assert (settings.tailnet, settings.tailscale_api_key) == ("your-company.ts.net", "tskey-api-xxxx")
    assert (settings.database, settings.api_host, settings.api_port) == (Path("discovery.db"), "0.0.0.0", 8082)
    assert settings.sync_interval == 300 and settings.tailscale_enabled
    from_env = load_settings(DiscoverySettings, config_file=config,
                             env={"TAILNET": "farms.ts.net", "TAILSCALE_API_KEY": "tskey-api-env"})
    assert (from_env.tailnet, from_env.tailscale_api_key) == ("farms.ts.net", "tskey-api-env")


def test_the_guides_farm_config_and_variables_set_every_farm_key(tmp_path: Path) -> None:
    config = tmp_path / "farm_config.yaml"
    config.write_text(FARM_CONFIG_YAML, encoding="utf-8")
    settings = load_settings(AgentSettings, config_file=config, env={})
    assert (settings.farm_id, settings.farm_name, settings.owner_id, settings.location) == (
        "farm-kub1063-001", "Ферма КУБ-1063 Теплица №1", "user_farmer1", "greenhouse-1")
    assert settings.capabilities == ["kub1063", "monitoring", "control"] and settings.api_port == 8080
    assert (settings.tailnet, settings.tailscale_api_key) == ("your-company.ts.net", "tskey-api-xxxx")
    assert settings.discovery_url == "http://discovery-service-tailscale-ip:8082"
    assert settings.heartbeat_interval == 300
    env = {"FARM_ID": "farm-002", "FARM_NAME": "Птичник", "OWNER_ID": "ivan", "TAILNET": "farms.ts.net",
           "TAILSCALE_API_KEY": "tskey-api-farm", "DISCOVERY_SERVICE_URL": "http://100.64.0.1:8082"}
    overridden = load_settings(AgentSettings, config_file=config, env=env)
    assert (overridden.farm_id, overridden.farm_name, overridden.owner_id) == ("farm-002", "Птичник", "ivan")
    assert (overridden.tailnet, overridden.tailscale_api_key) == ("farms.ts.net", "tskey-api-farm")
    assert overridden.discovery_url == "http://100.64.0.1:8082"


def test_a_discovery_node_runs_from_the_guides_config_yaml(tmp_path: Path, data_dir: Path) -> None:
    api = FakeTailscaleApi().start()
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG_YAML.replace('"discovery.db"', f'"{tmp_path / "owner.db"}"')
                      .replace('"0.0.0.0"', '"127.0.0.1"').replace("8082", str(port))
                      .replace("tskey-api-xxxx", API_KEY), encoding="utf-8")
    IdentityStore(data_dir).add("farm-001", Role.FARM, owner="ivan")
    process = ServiceProcess(
        ["discovery", "--config", str(config), "--data-dir", str(data_dir), "--mqtt-host", "127.0.0.1",
         "--mqtt-port", str(free_port())], tmp_path / "discovery.log",
        env={"API_TOKEN": TOKEN, "TAILSCALE_API_URL": api.url, "TAILSCALE_CLI": str(STANDIN_BIN / "tailscale")},
    ).wait_port(port)
    node = Discovery(process, port, 0, IdentityStore(data_dir))
    try:
        assert node.get("/health")[1]["database"] == "ok" and (tmp_path / "owner.db").exists()
        devices = wait_until(lambda: (d := node.get("/api/tailnet/devices")[1])["synced_at"] and d, 10,
                             what="a sync with the config's tailnet and key")
        assert devices["tailnet"] == "your-company.ts.net"
        assert api.requests[0]["path"] == "/api/v2/tailnet/your-company.ts.net/devices"
        assert devices["farms"]["farm-001"]["device"] == "51e0c8a3f1e8b001"
    finally:
        process.stop()
        api.stop()
