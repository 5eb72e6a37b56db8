"""Extension: the alerting of the discovery node (:class:`AlertingService`), on the node's bus.

It receives every farm topic, decoded once by the bus, and the operators' acknowledgements on
``{base}/alerts/{farm}/ack``; it publishes each farm's open alerts retained through the bus's session,
adds its figures to ``/metrics`` and owns the alert store (SQLite: ``alerts.db``; PostgreSQL: shared by the nodes).
"""

from __future__ import annotations

from contract.messages import AlertAckMessage, FarmMessage, Message
from discovery.alerting.metrics import AlertingCollector
from discovery.alerting.service import AlertingService
from discovery.alerting.setup import build_alerting
from discovery.extension import Extension, Node
from discovery.metrics import Metrics
from discovery.storage import Database


class Alerting(Extension):
    name = "alerting"

    def __init__(self, node: Node, service: AlertingService) -> None:
        self.node = node
        self.service = service

    @classmethod
    def build(cls, node: Node) -> Alerting:
        service = build_alerting(node.settings, node.identities, node.topics, node.clock, node.storage)
        service.may_notify = lambda: node.lease.held  # one node tells; the others keep the same alerts
        return cls(node, service)

    def filters(self) -> list[str]:
        return [self.node.topics.farm_filter(), self.node.topics.alerts_ack_filter()]

    async def start(self) -> None:
        metrics = self.node.extensions.get(Metrics)
        if metrics is not None:
            metrics.registry.register(AlertingCollector(self.service))
        await self.service.start(self.node.publish)

    async def stop(self) -> None:
        await self.service.stop()

    def databases(self) -> list[Database]:
        return [self.service.store.store.db]

    async def on_message(self, message: Message) -> None:
        if isinstance(message, AlertAckMessage):
            await self.service.on_ack(message)
        elif isinstance(message, FarmMessage):
            self.service.on_message(message)
