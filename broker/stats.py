"""What the embedded broker is doing, for ``/metrics``: clients, messages, ACL refusals, retained
messages, messages dropped for offline sessions.

Messages are counted by :class:`broker.server.KubBroker`; the ACL refusals are
the :class:`broker.plugins.TopicAclPlugin`'s own counter.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker.server import KubBroker


@dataclass(frozen=True)
class BrokerStats:
    clients: int
    messages_received: int
    acl_refusals: int
    retained: int
    offline_dropped: int


def broker_stats(broker: KubBroker) -> BrokerStats:
    acl = broker.plugins_manager.get_plugin("TopicAclPlugin")
    clients = sum(1 for session, _ in broker.sessions.values() if session.transitions.state == "connected")
    return BrokerStats(
        clients=clients,
        messages_received=broker.messages_received,
        acl_refusals=getattr(acl, "refusals", 0),
        retained=len(broker.retained_messages),
        offline_dropped=broker.offline_dropped,
    )
