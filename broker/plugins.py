"""amqtt plug-ins that make the embedded broker authenticate and confine every client.

Both read the identity store of the broker's data dir, so identities added,
rotated or removed by ``kubmesh farm``/``kubmesh user`` apply at the next
connect or message, without a restart.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from amqtt.contexts import Action, BaseContext
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from broker.acl import Access, AclRules
from broker.identities import IdentityStore, StoreError
from broker.topics import DEFAULT_BASE, HA_DEFAULT_PREFIX, Topics

log = logging.getLogger("kubmesh.broker")

_ACCESS = {Action.PUBLISH: Access.PUBLISH, Action.SUBSCRIBE: Access.SUBSCRIBE, Action.RECEIVE: Access.RECEIVE}


@dataclass
class StoreConfig:
    data_dir: str = "./kubmesh-data"
    base_topic: str = DEFAULT_BASE
    ha_prefix: str = HA_DEFAULT_PREFIX


class IdentityAuthPlugin(BaseAuthPlugin):
    """Accepts a CONNECT only with a username and secret that match the identity store."""

    Config = StoreConfig

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        self.store = IdentityStore(self.config.data_dir)

    async def authenticate(self, *, session: Session) -> bool:
        password = session.password
        if isinstance(password, bytes | bytearray):
            password = password.decode("utf-8", "replace")
        try:
            identity = self.store.authenticate(session.username, password)
        except StoreError as exc:
            log.error("refusing %s: %s", session.client_id, exc)
            return False
        if identity is None:
            log.warning(
                "refused connection of client %r from %s: %s",
                session.client_id,
                session.remote_address,
                "no username" if not session.username else f"bad credentials for {session.username!r}",
            )
            return False
        return True


class TopicAclPlugin(BaseTopicPlugin):
    """Applies :class:`broker.acl.AclRules` to every publish, subscribe and delivery."""

    Config = StoreConfig

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        self.store = IdentityStore(self.config.data_dir)
        self.rules = AclRules(Topics(self.config.base_topic), self.config.ha_prefix)
        self.refusals = 0

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: Action | None = None
    ) -> bool:
        if session is None or topic is None or action is None:
            return False
        identity = self.store.get(session.username) if session.username else None
        allowed = identity is not None and self.rules.allowed(
            identity, _ACCESS[action], topic, self.store.farm_owner
        )
        if not allowed:
            self.refusals += 1
            level = logging.DEBUG if action is Action.RECEIVE else logging.WARNING
            log.log(level, "ACL refused %s of %r by client %r (%s)", action.value, topic,
                    session.client_id, session.username)
        return allowed
