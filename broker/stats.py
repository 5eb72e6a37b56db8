"""What the embedded broker is doing, for ``/metrics``: clients, messages, ACL refusals, retained
messages, messages dropped for offline sessions.

Messages are counted by :class:`broker.core.KubBroker`; the ACL refusals are
the :class:`broker.access.TopicAcl`'s own counter.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker.core import KubBroker


@dataclass(frozen=True)
class BrokerStats:
    clients: int
    messages_received: int
    acl_refusals: int
    retained: int
    offline_dropped: int


def broker_stats(broker: KubBroker) -> BrokerStats:
    return BrokerStats(
        clients=broker.table.connected(),
        messages_received=broker.messages_received,
        acl_refusals=broker.acl.refusals,
        retained=len(broker.retained),
        offline_dropped=broker.offline_dropped,
    )
