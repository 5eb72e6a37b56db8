"""The Tailscale policy kubmesh needs: who may reach which port, and tests Tailscale checks on save.

Mobiles reach the discovery node's REST API (8082) and web (5000) and the farms'
agent API (8080); farms reach the broker (1883, 8883) and the REST API (8082);
the discovery node reaches the farms' agent API (8080). Nothing else is
accepted, so farm-to-farm traffic is denied without a rule.
"""

from __future__ import annotations

from typing import Any

FARM, MOBILE, DISCOVERY = "tag:farm", "tag:mobile", "tag:discovery"
MQTT, MQTT_TLS, REST, AGENT, WEB = 1883, 8883, 8082, 8080, 5000

RULES: list[tuple[str, str, tuple[int, ...]]] = [
    (MOBILE, DISCOVERY, (REST, WEB)),
    (MOBILE, FARM, (AGENT,)),
    (FARM, DISCOVERY, (MQTT, MQTT_TLS, REST)),
    (DISCOVERY, FARM, (AGENT,)),
]


def _dst(tag: str, ports: tuple[int, ...]) -> str:
    return f"{tag}:{','.join(map(str, ports))}"


def recommended_policy(tag_owner: str = "autogroup:admin") -> dict[str, Any]:
    return {
        "tagOwners": {tag: [tag_owner] for tag in (FARM, MOBILE, DISCOVERY)},
        "acls": [{"action": "accept", "src": [src], "dst": [_dst(dst, ports)]} for src, dst, ports in RULES],
        "tests": [
            {"src": FARM, "accept": [f"{DISCOVERY}:{MQTT}", f"{DISCOVERY}:{MQTT_TLS}", f"{DISCOVERY}:{REST}"],
             "deny": [f"{FARM}:{AGENT}", f"{MOBILE}:{WEB}", f"{DISCOVERY}:{WEB}"]},
            {"src": MOBILE, "accept": [f"{FARM}:{AGENT}", f"{DISCOVERY}:{REST}", f"{DISCOVERY}:{WEB}"],
             "deny": [f"{DISCOVERY}:{MQTT}", f"{FARM}:22"]},
            {"src": DISCOVERY, "accept": [f"{FARM}:{AGENT}"], "deny": [f"{FARM}:22", f"{MOBILE}:{WEB}"]},
        ],
    }


def policy_ports(policy: dict[str, Any]) -> set[int]:
    """Every port an ``acls`` rule accepts."""
    ports: set[int] = set()
    for rule in policy["acls"]:
        for dst in rule["dst"]:
            ports.update(int(p) for p in dst.rsplit(":", 1)[1].split(","))
    return ports
