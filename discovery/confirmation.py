"""Extension: the history's confirmation to each farm, ``{base}/discovery/committed/{farm}``.

A broker's PUBACK says only that the broker took a reading; a broker with no subscriber for it (it
restarted empty, the discovery node was away) drops it. So the farm keeps every reading until this
confirmation covers it: the farm's committed mark (:class:`contract.payloads.Committed`), kept by
:class:`~discovery.history.HistoryRecorder` in the transaction that stores the readings. It is
published retained, at QoS 0 (a lost one is followed by the next, or asked for again by the farm's
resend), after a commit that moved it — at most once per farm per commit, whatever the number of
readings — and every farm's mark again on each connect, before the node says ``online``, so a broker
that lost its retained messages has them again. A farm's heartbeat (``held_from``) lets its mark step
over readings the farm dropped itself.
"""

from __future__ import annotations

from contract.messages import FarmMessage, Message
from contract.payloads import Committed, Heartbeat, encode
from contract.topics import FarmTopic, Topics
from discovery.extension import ConnectionPublish, Extension, Node
from discovery.history import HistoryRecorder


class Confirmation(Extension):
    name = "confirmation"

    def __init__(self, node: Node) -> None:
        self.node = node
        self.topics: Topics = node.topics
        self.published = 0  # marks sent, ever (for /metrics)
        self._publish: ConnectionPublish | None = None

    @classmethod
    def build(cls, node: Node) -> Confirmation:
        return cls(node)

    @property
    def history(self) -> HistoryRecorder:
        history = self.node.extensions.get(HistoryRecorder)
        if history is None:
            raise RuntimeError("the confirmation extension needs the history extension")
        return history

    def filters(self) -> list[str]:
        return [self.topics.all_farms(FarmTopic.HEARTBEAT)]

    async def start(self) -> None:
        self.history  # noqa: B018 - fail at start, not at the first commit, when there is no history

    async def on_connected(self, publish: ConnectionPublish) -> None:
        self._publish = publish
        self.history.take_announcements()  # all of them go out now
        for farm_id, seq in sorted(self.history.marks.items()):
            await self._send(publish, farm_id, seq)

    async def on_disconnected(self) -> None:
        self._publish = None

    async def on_message(self, message: Message) -> None:
        if isinstance(message, FarmMessage) and isinstance(message.payload, Heartbeat) \
                and message.payload.held_from is not None:
            self.history.hold_from(message.farm_id, message.payload.held_from)

    async def commit(self) -> None:
        publish = self._publish
        if publish is None:
            return  # the next connect publishes every mark
        for farm_id, seq in self.history.take_announcements().items():
            await self._send(publish, farm_id, seq)

    async def _send(self, publish: ConnectionPublish, farm_id: str, seq: int) -> None:
        await publish(self.topics.committed(farm_id), encode(Committed(seq=seq)), qos=0, retain=True)
        self.published += 1
