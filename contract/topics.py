"""The MQTT topic tree of kubmesh, built and parsed in one place.

Every component builds topics through :class:`Topics`; a topic string typed by
hand elsewhere is a bug. The layout is CONTRACT.md's::

    {base}/farms/{farm}/status|meta|heartbeat|state|backlog|alarms|events|ack
    {base}/farms/{farm}/set/{name}
    {base}/discovery/status
    {base}/discovery/committed/{farm}  (retained, by the discovery node)
    {base}/alerts/{farm}          (retained, by the discovery node)
    {base}/alerts/{farm}/ack      (by an operator)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

FARM_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
VALUE_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
DEFAULT_BASE = "kub"
ALERTS = "alerts"
ALERTS_ACK = "ack"


class FarmTopic(StrEnum):
    """The leaves under ``{base}/farms/{farm}/``."""

    STATUS = "status"
    META = "meta"
    HEARTBEAT = "heartbeat"
    STATE = "state"
    BACKLOG = "backlog"
    ALARMS = "alarms"
    EVENTS = "events"
    ACK = "ack"
    SET = "set"


RETAINED: frozenset[FarmTopic] = frozenset(
    {FarmTopic.STATUS, FarmTopic.META, FarmTopic.HEARTBEAT, FarmTopic.STATE, FarmTopic.ALARMS}
)


class InvalidTopic(ValueError):
    """A farm id, value name or topic that the contract does not allow."""


def check_farm_id(farm_id: str) -> str:
    if not FARM_ID_PATTERN.fullmatch(farm_id):
        raise InvalidTopic(
            f"invalid farm id {farm_id!r}: use 1-64 characters a-z, 0-9, '_' or '-', starting with a letter or digit"
        )
    return farm_id


def check_value_name(name: str) -> str:
    if not VALUE_NAME_PATTERN.fullmatch(name):
        raise InvalidTopic(f"invalid value name {name!r}")
    return name


@dataclass(frozen=True)
class ParsedTopic:
    farm_id: str
    kind: FarmTopic
    name: str | None = None  # the value name of a set/{name} topic


@dataclass(frozen=True)
class Topics:
    """Topic builders for one base topic (``kub`` unless configured)."""

    base: str = DEFAULT_BASE

    def farm(self, farm_id: str, kind: FarmTopic) -> str:
        if kind is FarmTopic.SET:
            raise InvalidTopic("set topics need a value name: use Topics.set()")
        return f"{self.base}/farms/{check_farm_id(farm_id)}/{kind.value}"

    def status(self, farm_id: str) -> str:
        return self.farm(farm_id, FarmTopic.STATUS)

    def meta(self, farm_id: str) -> str:
        return self.farm(farm_id, FarmTopic.META)

    def heartbeat(self, farm_id: str) -> str:
        return self.farm(farm_id, FarmTopic.HEARTBEAT)

    def state(self, farm_id: str) -> str:
        return self.farm(farm_id, FarmTopic.STATE)

    def backlog(self, farm_id: str) -> str:
        return self.farm(farm_id, FarmTopic.BACKLOG)

    def alarms(self, farm_id: str) -> str:
        return self.farm(farm_id, FarmTopic.ALARMS)

    def events(self, farm_id: str) -> str:
        return self.farm(farm_id, FarmTopic.EVENTS)

    def ack(self, farm_id: str) -> str:
        return self.farm(farm_id, FarmTopic.ACK)

    def set(self, farm_id: str, name: str) -> str:
        return f"{self.base}/farms/{check_farm_id(farm_id)}/set/{check_value_name(name)}"

    def set_filter(self, farm_id: str) -> str:
        return f"{self.base}/farms/{check_farm_id(farm_id)}/set/+"

    def farm_filter(self, farm_id: str = "+") -> str:
        """All topics of one farm (or of every farm with the default)."""
        if farm_id != "+":
            check_farm_id(farm_id)
        return f"{self.base}/farms/{farm_id}/#"

    def farm_prefix(self, farm_id: str) -> str:
        return f"{self.base}/farms/{check_farm_id(farm_id)}/"

    def all_farms(self, kind: FarmTopic) -> str:
        return f"{self.base}/farms/+/{kind.value}"

    def discovery_status(self) -> str:
        return f"{self.base}/discovery/status"

    def committed(self, farm_id: str) -> str:
        """The history's confirmation to one farm: which of its readings are stored (retained)."""
        return f"{self.base}/discovery/committed/{check_farm_id(farm_id)}"

    def committed_farm(self, topic: str) -> str | None:
        """The farm of a ``committed`` topic, or None for any other topic."""
        prefix = f"{self.base}/discovery/committed/"
        if not topic.startswith(prefix):
            return None
        return check_farm_id(topic.removeprefix(prefix))

    def discovery_prefix(self) -> str:
        return f"{self.base}/discovery/"

    def alerts(self, farm_id: str) -> str:
        """A farm's open alerts, retained, published by the discovery node."""
        return f"{self.base}/{ALERTS}/{check_farm_id(farm_id)}"

    def alerts_ack(self, farm_id: str) -> str:
        """Where an operator acknowledges a farm's alerts."""
        return f"{self.alerts(farm_id)}/{ALERTS_ACK}"

    def alerts_prefix(self) -> str:
        return f"{self.base}/{ALERTS}/"

    def parse_alerts(self, topic: str) -> str:
        """The farm id of an ``{base}/alerts/{farm}`` topic."""
        parts = topic.split("/")
        if len(parts) != 3 or parts[0] != self.base or parts[1] != ALERTS:
            raise InvalidTopic(f"not a farm's alerts topic: {topic!r}")
        return check_farm_id(parts[2])

    def alerts_filter(self) -> str:
        return f"{self.base}/{ALERTS}/+"

    def alerts_ack_filter(self) -> str:
        return f"{self.base}/{ALERTS}/+/{ALERTS_ACK}"

    def parse_alerts_ack(self, topic: str) -> str:
        """The farm id of an ``{base}/alerts/{farm}/ack`` topic."""
        parts = topic.split("/")
        if len(parts) != 4 or parts[0] != self.base or parts[1] != ALERTS or parts[3] != ALERTS_ACK:
            raise InvalidTopic(f"not an alert acknowledgement topic: {topic!r}")
        return check_farm_id(parts[2])

    def parse(self, topic: str) -> ParsedTopic:
        """Split a farm topic into farm id, kind and (for set) value name."""
        parts = topic.split("/")
        if len(parts) < 4 or parts[0] != self.base or parts[1] != "farms":
            raise InvalidTopic(f"not a farm topic: {topic!r}")
        farm_id = check_farm_id(parts[2])
        try:
            kind = FarmTopic(parts[3])
        except ValueError:
            raise InvalidTopic(f"unknown farm topic {parts[3]!r} in {topic!r}") from None
        if kind is FarmTopic.SET:
            if len(parts) != 5:
                raise InvalidTopic(f"set topic needs exactly one value name: {topic!r}")
            return ParsedTopic(farm_id, kind, check_value_name(parts[4]))
        if len(parts) != 4:
            raise InvalidTopic(f"unexpected levels after {kind.value!r}: {topic!r}")
        return ParsedTopic(farm_id, kind)


HA_DEFAULT_PREFIX = "homeassistant"
HA_NODE_PREFIX = "kubmesh-"


def ha_node_id(farm_id: str) -> str:
    """The Home Assistant object id of a farm's device: ``kubmesh-farm-001``."""
    return f"{HA_NODE_PREFIX}{check_farm_id(farm_id)}"


def ha_device_config_topic(prefix: str, farm_id: str) -> str:
    return f"{prefix}/device/{ha_node_id(farm_id)}/config"


def ha_status_topic(prefix: str) -> str:
    return f"{prefix}/status"


def filter_within(topic_filter: str, pattern: str) -> bool:
    """True when every topic that ``topic_filter`` matches is also matched by ``pattern``.

    For a plain topic this is ordinary MQTT matching; for a filter with
    wildcards it says whether the subscription stays inside what is allowed.
    """
    levels = topic_filter.split("/")
    allowed = pattern.split("/")
    for index, rule in enumerate(allowed):
        if rule == "#":
            return True
        if index >= len(levels):
            return False
        level = levels[index]
        if level == "#":
            return False
        if rule == "+":
            continue
        if level != rule:
            return False
    return len(levels) == len(allowed)
