"""The broker's subscriptions, and their topic filters arranged by level, so a message finds the
filters that match it.

amqtt tries every subscription's filter against every message, a cost that grows with the number
of filters (each farm subscribes to its own commands). :class:`FilterIndex` walks only the levels
of the topic, and remembers the answer per topic until a filter is added or removed;
:class:`Subscriptions`, the subscription table (the one amqtt's frame and plug-ins see), keeps it
up to date and each session's own list of filters, so a session that leaves is dropped from its
filters without walking the table.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from broker.amqtt_adapter import LeanSession

MEMO_LIMIT = 100_000
FILTERS = "kubmesh.filters"  # a session's attribute: the topic filters it subscribed to
REFUSED = 0x80


class _Level:
    __slots__ = ("children", "filters")

    def __init__(self) -> None:
        self.children: dict[str, _Level] = {}
        self.filters: list[str] = []


class FilterIndex:
    """The topic filters of a broker, by level; MQTT 3.1.1 matching (§4.7), ``$`` topics included."""

    __slots__ = ("_memo", "_root")

    def __init__(self, filters: Iterable[str] = ()) -> None:
        self._root = _Level()
        self._memo: dict[str, tuple[str, ...]] = {}
        for topic_filter in filters:
            self.add(topic_filter)

    def add(self, topic_filter: str) -> None:
        node = self._root
        for level in topic_filter.split("/"):
            node = node.children.setdefault(level, _Level())
        if topic_filter not in node.filters:
            node.filters.append(topic_filter)
            self._memo.clear()

    def remove(self, topic_filter: str) -> None:
        levels = topic_filter.split("/")
        path = [self._root]
        for level in levels:
            child = path[-1].children.get(level)
            if child is None:
                return
            path.append(child)
        if topic_filter not in path[-1].filters:
            return
        path[-1].filters.remove(topic_filter)
        self._memo.clear()
        for depth in range(len(levels), 0, -1):  # drop the levels no other filter needs
            if path[depth].children or path[depth].filters:
                break
            del path[depth - 1].children[levels[depth - 1]]

    def clear(self) -> None:
        self._root = _Level()
        self._memo.clear()

    def match(self, topic: str) -> tuple[str, ...]:
        """Every filter that matches ``topic``."""
        found = self._memo.get(topic)
        if found is None:
            matched: list[str] = []
            levels = topic.split("/")
            root = self._root
            if topic.startswith("$"):  # wildcards at the first level do not match $ topics (§4.7.2)
                first = root.children.get(levels[0])
                if first is not None:
                    _walk(first, levels, 1, matched)
            else:
                _walk(root, levels, 0, matched)
            found = tuple(matched)
            if len(self._memo) >= MEMO_LIMIT:
                self._memo.clear()
            self._memo[topic] = found
        return found


def _walk(node: _Level, levels: list[str], index: int, matched: list[str]) -> None:
    children = node.children
    rest = children.get("#")
    if rest is not None:  # "a/#" matches "a" and everything below it
        matched.extend(rest.filters)
    if index == len(levels):
        matched.extend(node.filters)
        return
    child = children.get(levels[index])
    if child is not None:
        _walk(child, levels, index + 1, matched)
    child = children.get("+")
    if child is not None:
        _walk(child, levels, index + 1, matched)


class Subscriptions(dict[str, list[tuple[LeanSession, int]]]):
    """The subscription table: filter → (session, QoS) pairs, with its filters kept in a
    :class:`FilterIndex` as they come and go.

    amqtt's plug-in context may walk the table across awaits, so it is walked over snapshots.
    """

    def __init__(self, index: FilterIndex) -> None:
        super().__init__()
        self.index = index

    def __setitem__(self, topic_filter: str, subscribers: list[tuple[LeanSession, int]]) -> None:
        if topic_filter not in self:
            self.index.add(topic_filter)
        super().__setitem__(topic_filter, subscribers)

    def __delitem__(self, topic_filter: str) -> None:
        super().__delitem__(topic_filter)
        self.index.remove(topic_filter)

    def clear(self) -> None:
        super().clear()
        self.index.clear()

    def __iter__(self) -> Iterator[str]:
        return iter(list(self.keys()))

    def items(self) -> list[tuple[str, list[tuple[LeanSession, int]]]]:  # type: ignore[override]
        return [(topic, list(subscribers)) for topic, subscribers in super().items()]

    def subscribers(self, topic_filter: str) -> list[tuple[LeanSession, int]]:
        return dict.get(self, topic_filter) or []

    def add(self, session: LeanSession, topic_filter: str, qos: int) -> None:
        """§3.8.4: a repeated subscription replaces the old one, with its QoS."""
        session.attributes.setdefault(FILTERS, set()).add(topic_filter)
        subscribers = dict.get(self, topic_filter)
        if subscribers is None:
            self[topic_filter] = [(session, qos)]
            return
        others = [(s, q) for s, q in subscribers if s.client_id != session.client_id]
        subscribers[:] = [*others, (session, qos)]

    def remove(self, session: LeanSession, topic_filter: str) -> None:
        session.attributes.get(FILTERS, set()).discard(topic_filter)
        subscribers = dict.get(self, topic_filter)
        if subscribers is None:
            return
        subscribers[:] = [(s, q) for s, q in subscribers if s.client_id != session.client_id]
        if not subscribers:
            del self[topic_filter]  # and out of the filter index: nothing left to deliver to

    def drop(self, session: LeanSession) -> None:
        """Every subscription of a session, found from its own list rather than by walking the table."""
        for topic_filter in list(session.attributes.pop(FILTERS, ())):
            self.remove(session, topic_filter)

    @staticmethod
    def filters_of(session: LeanSession) -> list[str]:
        return list(session.attributes.get(FILTERS, ()))

    def granted(self, session: LeanSession, topic_filter: str) -> int | None:
        """The QoS ``session`` holds a subscription to ``topic_filter`` at, or None."""
        for subscriber, qos in self.subscribers(topic_filter):
            if subscriber.client_id == session.client_id:
                return qos
        return None


def valid_filter(topic_filter: str) -> bool:
    """§4.7.1: ``#`` alone on the last level, ``+`` alone on its level."""
    levels = topic_filter.split("/")
    return bool(topic_filter) and not any(
        ("#" in level and (level != "#" or index != len(levels) - 1)) or ("+" in level and level != "+")
        for index, level in enumerate(levels)
    )
