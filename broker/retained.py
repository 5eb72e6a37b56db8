"""The broker's retained messages (§3.3.1.3): the last message retained on each topic, kept for later
subscribers without the session that sent it (which it would keep in memory after its client left).

A retained message goes out at the lower of its own and the subscription's QoS (§3.8.4,
:func:`retained_qos`; amqtt sent it at the subscription's). A ``set`` command is never retained
(:meth:`RetainedStore.refuses`): a retained command would be applied again by every agent that
subscribes later, and the broker clears RETAIN on live delivery, so the agent cannot tell.
"""

from __future__ import annotations

from collections.abc import Iterator

from broker.amqtt_adapter import Retained, amqtt_matches
from contract.topics import FarmTopic, Topics


def retained_qos(subscription_qos: int, message_qos: int | None) -> int:
    """The QoS a retained message is delivered at: never more than it was published with."""
    return subscription_qos if message_qos is None else min(subscription_qos, message_qos)


class RetainedStore(dict[str, Retained]):
    """Topic → its retained message; the table amqtt's frame and plug-ins see as well."""

    def __init__(self, topics: Topics) -> None:
        super().__init__()
        self.base = topics.base

    def refuses(self, topic: str) -> bool:
        """Whether a PUBLISH on ``topic`` must not be retained: the commands, ``{base}/farms/+/set/#``."""
        levels = topic.split("/", 4)
        return len(levels) >= 4 and levels[0] == self.base and levels[1] == "farms" and levels[3] == FarmTopic.SET

    def store(self, topic: str, data: bytes, qos: int | None) -> Retained | None:
        """Keep ``data`` for ``topic``; an empty one clears it. The message kept or cleared, for plug-ins."""
        if data:
            self[topic] = message = Retained(topic, data, qos)
            return message
        cleared = self.pop(topic, None)
        if cleared is not None:
            cleared.data = b""
        return cleared

    def matching(self, topic_filter: str) -> Iterator[Retained]:
        literal = topic_filter.split("+", 1)[0].split("#", 1)[0]
        for topic, message in list(self.items()):
            if topic.startswith(literal) and amqtt_matches(topic, topic_filter):
                yield message
