"""The broker's topic filters arranged by level, so a message finds the filters that match it.

amqtt tries every subscription's filter against every message, a cost that grows with the number
of filters (each farm subscribes to its own commands). :class:`FilterIndex` walks only the levels
of the topic, and remembers the answer per topic until a filter is added or removed;
:class:`Subscriptions`, amqtt's subscription table, keeps it up to date.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from amqtt.session import Session

MEMO_LIMIT = 100_000


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


class Subscriptions(dict[str, list[tuple[Session, int]]]):
    """amqtt's subscription table, with its filters kept in a :class:`FilterIndex` as they come and go.

    amqtt walks the table across awaits (retained messages on connect, its own broadcast), so it
    is walked over snapshots: a client subscribing or leaving meanwhile raised "dictionary changed
    size during iteration".
    """

    def __init__(self, table: dict[str, list[tuple[Session, int]]], index: FilterIndex) -> None:
        super().__init__(table)
        self.index = index
        for topic_filter in table:
            index.add(topic_filter)

    def __setitem__(self, topic_filter: str, subscribers: list[tuple[Session, int]]) -> None:
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

    def items(self) -> list[tuple[str, list[tuple[Session, int]]]]:  # type: ignore[override]
        return [(topic, list(subscribers)) for topic, subscribers in super().items()]
