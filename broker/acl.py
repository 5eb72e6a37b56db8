"""Who may publish, subscribe to and receive which topic: one policy, kept as data.

The policy is a list of :class:`Grant` per role. The embedded broker evaluates
it (:meth:`AclRules.allowed`) and ``kubmesh broker export-mosquitto`` renders
the same grants as a Mosquitto ACL file (``broker/mosquitto.py``), so both
brokers enforce the same rules.

- a farm: publishes its own leaves ``{base}/farms/{id}/status|meta|…|ack`` (not
  ``set/…``, which only commanders publish) and its own Home Assistant configs;
  reads its own subtree, ``homeassistant/status``, ``{base}/discovery/status`` (the farm texts
  its farmer when the discovery node is dead: farm_agent/sms; it replays only while it is online) and the history's
  confirmation to it alone, ``{base}/discovery/committed/{id}``;
- discovery: reads everything under ``{base}``, alone publishes ``{base}/discovery/#`` and each farm's
  open alerts ``{base}/alerts/{id}``;
- mobile web: reads everything under ``{base}``, publishes ``set/…`` commands and its users' alert
  acknowledgements;
- viewer: reads ``{base}/#`` and the Home Assistant tree, publishes nothing;
- operator: a viewer that may also publish ``set/…`` and acknowledge alerts (``{base}/alerts/{id}/ack``);
- homeassistant: what Home Assistant's MQTT integration does: an operator that also
  publishes its birth and last will on ``homeassistant/status``, and whose
  subscriptions to other integrations' discovery prefixes (``tasmota/discovery/#``,
  ``esphome/discover/#``, …) are granted and deliver nothing (a
  :attr:`Right.SUBSCRIBE` grant on ``#``), so that HA's every connect is quiet;
- admin: the superuser, every topic.

A person with an owner reads only that owner's farms (and the discovery status
and ``homeassistant/status``), and an operator with an owner commands only them.

A subscription is accepted when its filter can match a topic the client may
read; every delivery, retained messages included, is checked on its own topic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from common.identities import Identity, Role
from contract.topics import (
    ALERTS,
    ALERTS_ACK,
    FARM_ID_PATTERN,
    HA_DEFAULT_PREFIX,
    HA_NODE_PREFIX,
    FarmTopic,
    Topics,
    ha_status_topic,
)

FARM = "{farm}"  # the level of a grant's filter that names a farm
WILDCARDS = ("+", "#")
FARM_ID_EXAMPLE = "x"  # a valid farm id, replaced by ``{farm}`` in a topic built by the contract


class Access(StrEnum):
    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"
    RECEIVE = "receive"


class Right(StrEnum):
    READ = "read"  # subscribe and receive
    WRITE = "write"  # publish
    SUBSCRIBE = "subscribe"  # subscribe only: granted, and each delivery still needs READ (Mosquitto's own way)


class Binding(StrEnum):
    """Which farm the ``{farm}`` level of a grant stands for."""

    NONE = "none"  # the filter names no farm
    SELF = "self"  # the client's own farm: its username (Mosquitto's ``%u``)
    OWNED = "owned"  # any farm of the client's owner


@dataclass(frozen=True)
class Grant:
    right: Right
    filter: str
    binding: Binding = Binding.NONE

    def for_farm(self, farm_id: str) -> str:
        return self.filter.replace(FARM, farm_id)


@dataclass(frozen=True)
class AclRules:
    topics: Topics = field(default_factory=Topics)
    ha_prefix: str = HA_DEFAULT_PREFIX
    policy: dict[tuple[Role, bool], tuple[Grant, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "policy", self._policy())

    def _policy(self) -> dict[tuple[Role, bool], tuple[Grant, ...]]:
        """Grants per (role, owner-scoped); owner scope matters only for viewers and operators."""
        base, ha = self.topics.base, self.ha_prefix
        read, write = Right.READ, Right.WRITE
        farm_tree = f"{base}/farms/{FARM}/#"
        farm_ha = f"{ha}/+/{HA_NODE_PREFIX}{FARM}/#"
        commands = f"{base}/farms/{FARM}/set/+"
        alerts, alert_acks = f"{base}/{ALERTS}/{FARM}", f"{base}/{ALERTS}/{FARM}/{ALERTS_ACK}"
        farm = (
            *(Grant(write, f"{base}/farms/{FARM}/{kind.value}", Binding.SELF)
              for kind in FarmTopic if kind is not FarmTopic.SET),
            Grant(write, farm_ha, Binding.SELF),
            Grant(read, farm_tree, Binding.SELF),
            Grant(read, ha_status_topic(ha)),
            Grant(read, self.topics.discovery_status()),
            Grant(read, self.topics.committed(FARM_ID_EXAMPLE).replace(FARM_ID_EXAMPLE, FARM), Binding.SELF),
        )
        everything = (Grant(read, f"{base}/#"), Grant(read, f"{ha}/#"))
        owned = (
            Grant(read, farm_tree, Binding.OWNED),
            Grant(read, farm_ha, Binding.OWNED),
            Grant(read, f"{self.topics.discovery_prefix()}#"),
            Grant(read, ha_status_topic(ha)),
            Grant(read, alerts, Binding.OWNED),
        )
        any_command = Grant(write, commands.replace(FARM, "+"))
        home_assistant = (Grant(write, ha_status_topic(ha)), Grant(Right.SUBSCRIBE, "#"))
        roles: dict[Role, tuple[Grant, ...]] = {
            Role.FARM: farm,
            Role.DISCOVERY: (Grant(read, f"{base}/#"), Grant(write, f"{self.topics.discovery_prefix()}#"),
                             Grant(write, alerts.replace(FARM, "+"))),
            Role.MOBILE_WEB: (Grant(read, f"{base}/#"), any_command, Grant(write, alert_acks.replace(FARM, "+"))),
            Role.VIEWER: everything,
            Role.OPERATOR: (*everything, any_command, Grant(write, alert_acks.replace(FARM, "+"))),
            Role.ADMIN: (Grant(read, "#"), Grant(write, "#")),
        }
        policy = {(role, scoped): grants for role, grants in roles.items() for scoped in (False, True)}
        policy[Role.VIEWER, True] = owned
        policy[Role.OPERATOR, True] = (*owned, Grant(write, commands, Binding.OWNED),
                                       Grant(write, alert_acks, Binding.OWNED))
        policy[Role.HOMEASSISTANT, False] = (*roles[Role.OPERATOR], *home_assistant)
        policy[Role.HOMEASSISTANT, True] = (*policy[Role.OPERATOR, True], *home_assistant)
        return policy

    def grants(self, identity: Identity) -> tuple[Grant, ...]:
        return self.policy[identity.role, identity.owner is not None]

    def allowed(
        self,
        identity: Identity,
        access: Access,
        topic: str,
        farm_owner: Callable[[str], str | None],
    ) -> bool:
        rights = {Access.PUBLISH: (Right.WRITE,), Access.SUBSCRIBE: (Right.READ, Right.SUBSCRIBE),
                  Access.RECEIVE: (Right.READ,)}[access]
        return any(
            grant.right in rights and self._matches(grant, identity, access, topic, farm_owner)
            for grant in self.grants(identity)
        )

    def _matches(
        self,
        grant: Grant,
        identity: Identity,
        access: Access,
        topic: str,
        farm_owner: Callable[[str], str | None],
    ) -> bool:
        farm = _match(topic, grant.filter, overlap=access is Access.SUBSCRIBE)
        if farm is None:
            return False
        if grant.binding is Binding.NONE or farm in WILDCARDS:
            return True  # a wildcard over farms in a subscription: each delivery is checked
        if grant.binding is Binding.SELF:
            return identity.role is Role.FARM and farm == identity.username
        return farm_owner(farm) == identity.owner


def _match(topic: str, grant_filter: str, *, overlap: bool) -> str | None:
    """Whether ``topic`` falls within ``grant_filter`` (or, with ``overlap``, can share a topic with it).

    Returns None for no match, else the topic's level at the grant's ``{farm}``
    level (``""`` when the grant names no farm, ``+``/``#`` when the topic
    filter has a wildcard there).
    """
    levels = topic.split("/")
    rules = grant_filter.split("/")
    farm = ""
    for index, rule in enumerate(rules):
        if rule == "#":
            return farm
        if index >= len(levels):
            return None
        level = levels[index]
        if level == "#":
            return (farm or "#") if overlap else None
        if FARM in rule:
            prefix = rule.removesuffix(FARM)
            if level == "+" and overlap:
                farm = "+"
            elif level.startswith(prefix) and FARM_ID_PATTERN.fullmatch(level.removeprefix(prefix)):
                farm = level.removeprefix(prefix)
            else:
                return None
        elif rule == "+":
            continue
        elif level == "+":
            if not overlap:
                return None
        elif level != rule:
            return None
    if len(levels) == len(rules) or (overlap and len(levels) == len(rules) + 1 and levels[-1] == "#"):
        return farm
    return None
