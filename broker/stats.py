"""What the embedded broker is doing, for ``/metrics``: clients, messages, ACL refusals.

A small amqtt plug-in counts the messages clients publish; the ACL refusals are
the :class:`broker.plugins.TopicAclPlugin`'s own counter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from amqtt.broker import Broker
from amqtt.contexts import BaseContext
from amqtt.plugins.base import BasePlugin


class MessageCounterPlugin(BasePlugin[BaseContext]):
    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        self.received = 0

    async def on_broker_message_received(self, *, client_id: str, message: Any) -> None:
        self.received += 1


@dataclass(frozen=True)
class BrokerStats:
    clients: int
    messages_received: int
    acl_refusals: int
    retained: int


def broker_stats(broker: Broker) -> BrokerStats:
    plugins = broker.plugins_manager
    counter = plugins.get_plugin(MessageCounterPlugin.__name__)
    acl = plugins.get_plugin("TopicAclPlugin")
    clients = sum(1 for session, _ in broker.sessions.values() if session.transitions.state == "connected")
    return BrokerStats(
        clients=clients,
        messages_received=getattr(counter, "received", 0),
        acl_refusals=getattr(acl, "refusals", 0),
        retained=len(broker.retained_messages),
    )
