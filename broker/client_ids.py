"""Which identity a client id belongs to.

MQTT's take-over rule (§3.1.4: a CONNECT with a client id in use ends the other connection) is only
safe between connections of one identity: applied across identities it let any login knock a farm
agent or the discovery node off the broker. So a client id in use belongs to the identity that holds
it, and the ids kubmesh's own services connect with belong to them before they first connect.
"""

from __future__ import annotations

from common.identities import Identity, Role

AGENT_PREFIX = "kubmesh-agent-"  # + the farm id: the farm agent's client id
SERVICE_IDS: dict[str, Role] = {
    "kubmesh-discovery": Role.DISCOVERY,
    "kubmesh-mobile-web": Role.MOBILE_WEB,
}
DISCOVERY_NODE_PREFIX = "kubmesh-discovery-"  # + NODE_NAME: one of several discovery nodes


def reserved_for(client_id: str, identity: Identity) -> bool:
    """False when ``client_id`` is kept for a farm or a service that ``identity`` is not."""
    if client_id.startswith(AGENT_PREFIX):
        return identity.role is Role.FARM and identity.username == client_id.removeprefix(AGENT_PREFIX)
    if client_id.startswith(DISCOVERY_NODE_PREFIX):
        return identity.role is Role.DISCOVERY
    role = SERVICE_IDS.get(client_id)
    return role is None or identity.role is role


def may_use(client_id: str, identity: Identity, holder: str | None) -> bool:
    """Whether ``identity`` may connect as ``client_id``, held now (by a session) by the username ``holder``."""
    if holder is not None and holder != identity.username:
        return False
    return reserved_for(client_id, identity)
