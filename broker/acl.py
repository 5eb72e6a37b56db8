"""Who may publish, subscribe to and receive which topic: one function, used by the
embedded broker and by the Mosquitto export, so both enforce the same rules.

- a farm: its own subtree ``{base}/farms/{id}/#`` (not its own ``set/``, which
  only commanders publish) and its own Home Assistant configs;
- discovery: reads everything under ``{base}``, alone publishes ``{base}/discovery/#``;
- mobile web: reads everything under ``{base}``, publishes ``set/…`` commands;
- viewer: reads ``{base}/#`` and the Home Assistant tree, publishes nothing;
- operator: a viewer that may also publish ``set/…``;
- admin: the superuser, every topic.

People with an owner see only the farms of that owner.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from broker.identities import Identity, Role
from broker.topics import (
    HA_DEFAULT_PREFIX,
    FarmTopic,
    Topics,
    filter_within,
    ha_node_id,
    ha_status_topic,
)


class Access(StrEnum):
    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"
    RECEIVE = "receive"


@dataclass(frozen=True)
class AclRules:
    topics: Topics = field(default_factory=Topics)
    ha_prefix: str = HA_DEFAULT_PREFIX

    def allowed(
        self,
        identity: Identity,
        access: Access,
        topic: str,
        farm_owner: Callable[[str], str | None],
    ) -> bool:
        role = identity.role
        if role is Role.ADMIN:
            return True
        if role is Role.FARM:
            return self._farm_allowed(identity.username, access, topic)
        if role in (Role.DISCOVERY, Role.MOBILE_WEB):
            return self._service_allowed(role, access, topic)
        return self._person_allowed(identity, access, topic, farm_owner)

    def _farm_allowed(self, farm_id: str, access: Access, topic: str) -> bool:
        own = self.topics.farm_filter(farm_id)
        own_ha = f"{self.ha_prefix}/+/{ha_node_id(farm_id)}/#"
        if access is Access.PUBLISH:
            if filter_within(topic, f"{self.topics.farm_prefix(farm_id)}{FarmTopic.SET.value}/#"):
                return False
            return filter_within(topic, own) or filter_within(topic, own_ha)
        return filter_within(topic, own) or filter_within(topic, ha_status_topic(self.ha_prefix))

    def _service_allowed(self, role: Role, access: Access, topic: str) -> bool:
        if access is not Access.PUBLISH:
            return filter_within(topic, f"{self.topics.base}/#")
        if role is Role.DISCOVERY:
            return filter_within(topic, f"{self.topics.discovery_prefix()}#")
        return filter_within(topic, f"{self.topics.base}/farms/+/{FarmTopic.SET.value}/+")

    def _person_allowed(
        self, identity: Identity, access: Access, topic: str, farm_owner: Callable[[str], str | None]
    ) -> bool:
        if access is Access.PUBLISH:
            if identity.role is not Role.OPERATOR:
                return False
            if not filter_within(topic, f"{self.topics.base}/farms/+/{FarmTopic.SET.value}/+"):
                return False
        elif not (
            filter_within(topic, f"{self.topics.base}/#") or filter_within(topic, f"{self.ha_prefix}/#")
        ):
            return False
        if identity.owner is None:
            return True
        farm_id = self._farm_of(topic)
        if farm_id is None:
            # a broad filter such as kub/# is allowed; what it delivers is checked per topic
            return access is Access.SUBSCRIBE or not topic.startswith(f"{self.topics.base}/farms/")
        return farm_owner(farm_id) == identity.owner

    def _farm_of(self, topic: str) -> str | None:
        """The farm a topic (or filter) names, or None when it names none or uses a wildcard there."""
        levels = topic.split("/")
        if len(levels) >= 3 and levels[0] == self.topics.base and levels[1] == "farms":
            return None if levels[2] in ("+", "#") else levels[2]
        if len(levels) >= 3 and levels[0] == self.ha_prefix and levels[2].startswith("kubmesh-"):
            return levels[2].removeprefix("kubmesh-")
        return None
