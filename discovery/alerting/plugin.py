"""The alerting on the discovery node's bus: every farm topic decoded once here, and the alerts'
acknowledgement topic, handed to :class:`AlertingService`."""

from __future__ import annotations

import logging

from contract.messages import AlertAckMessage, FarmMessage, MessageError, decode_message
from contract.topics import Topics
from discovery.alerting.service import AlertingService

log = logging.getLogger("kubmesh.discovery.alerting")


class AlertingPlugin:
    def __init__(self, service: AlertingService, topics: Topics) -> None:
        self.service = service
        self.topics = topics

    def subscriptions(self) -> list[str]:
        return [self.topics.farm_filter(), self.topics.alerts_ack_filter()]

    async def on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        try:
            message = decode_message(self.topics, topic, payload, retained)
        except MessageError as exc:
            log.info("alerting: dropped %s", exc)
            return
        if isinstance(message, AlertAckMessage):
            await self.service.on_ack(message)
        elif isinstance(message, FarmMessage):
            self.service.on_message(message)
