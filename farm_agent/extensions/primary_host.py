"""The discovery node as the farm's primary host (Eclipse Sparkplug B's STATE): its status and its confirmations.

``{base}/discovery/status`` (retained, with ``offline`` as the node's last will) gates the backlog's
replay (:class:`~farm_agent.reporter.Reporter`): the node says ``online`` only once its subscriptions
are in place, so what is replayed then has a subscriber. When it comes online while this agent is
connected, the agent announces itself again — ``status``, ``meta``, ``alarms``, the latest ``state`` and
``heartbeat`` — as a Sparkplug edge node sends its birth again, so that the registry never depends on
the broker having kept retained messages. ``{base}/discovery/committed/{farm}`` (this farm's only) is the
history's committed mark: the readings it covers leave the queue.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from contract.messages import MessageError, decode_committed
from farm_agent.extension import Extension, Inbound

log = logging.getLogger("kubmesh.agent")


class PrimaryHost(Extension):
    name = "primary_host"

    def subscriptions(self) -> Sequence[str]:
        topics, farm_id = self.agent.topics, self.agent.farm_id
        return (topics.discovery_status(), topics.committed(farm_id))

    async def on_disconnected(self) -> None:
        self.agent.reporter.disconnected()

    async def on_message(self, message: Inbound) -> None:
        agent = self.agent
        if message.topic == agent.topics.discovery_status():
            await self._status(message.payload == b"online", message.retained)
            return
        try:
            committed = decode_committed(agent.topics, message.topic, message.payload, message.retained)
        except MessageError as exc:
            log.warning("farm %s: dropped a committed mark: %s", agent.farm_id, exc.reason)
            return
        agent.reporter.confirm(committed.mark.seq)

    async def _status(self, online: bool, retained: bool) -> None:
        agent = self.agent
        was = agent.reporter.discovery_online.is_set()
        agent.reporter.discovery(online)
        if online == was:
            return
        log.info("farm %s: the discovery node is %s%s", agent.farm_id, "online" if online else "offline",
                 "" if online else ": the backlog waits, live readings go on")
        # a retained "online" on subscribe: the node was subscribed before this connection announced the farm
        if online and not retained:
            await agent.publish_meta()
            await agent.republish_retained()
