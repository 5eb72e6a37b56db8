"""amqtt plug-ins that make the embedded broker authenticate and confine every client.

Both read the identity store of the broker's data dir, so identities added,
rotated or removed by ``kubmesh farm``/``kubmesh user`` apply without a restart:
credentials at the next connect, topic rights at the next connect or within
``AclCache.RECHECK_S`` for a client already connected.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from amqtt.contexts import Action, BaseContext
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from broker.acl import Access, AclRules
from common.identities import IdentityStore, StoreError
from contract.topics import DEFAULT_BASE, HA_DEFAULT_PREFIX, Topics

log = logging.getLogger("kubmesh.broker")

_ACCESS = {Action.PUBLISH: Access.PUBLISH, Action.SUBSCRIBE: Access.SUBSCRIBE, Action.RECEIVE: Access.RECEIVE}


@dataclass
class StoreConfig:
    data_dir: str = "./kubmesh-data"
    base_topic: str = DEFAULT_BASE
    ha_prefix: str = HA_DEFAULT_PREFIX


_STORES: dict[Path, IdentityStore] = {}


def shared_store(data_dir: str) -> IdentityStore:
    """One parsed copy of a data dir's identities for both plug-ins (a few KB per farm)."""
    path = Path(data_dir).resolve()
    if path not in _STORES:
        _STORES[path] = IdentityStore(path)
    return _STORES[path]


class IdentityAuthPlugin(BaseAuthPlugin):
    """Accepts a CONNECT only with a username and secret that match the identity store."""

    Config = StoreConfig

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        self.store = shared_store(self.config.data_dir)

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


class AclCache:
    """ACL decisions per (username, topic, action), kept while the identity store is unchanged.

    A farm publishes the same few topics for ever, and every delivery asks whether the
    subscriber may receive it: deciding each once makes the check a dictionary lookup. The
    identities file is looked at (one ``stat``) at most every ``RECHECK_S`` and at every
    connect; when it has changed, every decision is dropped, so a removed identity or a
    changed role or owner applies to clients already connected too.
    """

    RECHECK_S = 1.0
    MAX_ENTRIES = 200_000

    def __init__(self, store: IdentityStore, rules: AclRules) -> None:
        self.store = store
        self.rules = rules
        self._decisions: dict[tuple[str, str, Access], bool] = {}
        self._stamp: tuple[int, int, int] | None = None
        self._next_check = 0.0

    def __len__(self) -> int:
        return len(self._decisions)

    def recheck_store(self) -> None:
        """Drop every decision if the identities file changed since they were made."""
        self._next_check = time.monotonic() + self.RECHECK_S
        try:
            stat = os.stat(self.store.path)
            # the file is replaced on every change: a new inode, even when size and mtime tick match
            stamp: tuple[int, int, int] | None = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp:
            self._decisions.clear()
            self._stamp = stamp

    def allowed(self, username: str | None, access: Access, topic: str) -> bool:
        if time.monotonic() >= self._next_check:
            self.recheck_store()
        if not username:
            return False
        key = (username, topic, access)
        decision = self._decisions.get(key)
        if decision is None:
            decision = self._decide(username, access, topic)
            if len(self._decisions) >= self.MAX_ENTRIES:
                self._decisions.clear()
            self._decisions[key] = decision
        return decision

    def _decide(self, username: str, access: Access, topic: str) -> bool:
        try:
            identity = self.store.get(username)
            return identity is not None and self.rules.allowed(identity, access, topic, self.store.farm_owner)
        except StoreError as exc:
            log.error("refusing %s of %r by %s: %s", access.value, topic, username, exc)
            return False


class TopicAclPlugin(BaseTopicPlugin):
    """Applies :class:`broker.acl.AclRules` to every publish, subscribe and delivery, through an :class:`AclCache`."""

    Config = StoreConfig

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        self.store = shared_store(self.config.data_dir)
        self.rules = AclRules(Topics(self.config.base_topic), self.config.ha_prefix)
        self.cache = AclCache(self.store, self.rules)
        self.refusals = 0

    async def on_broker_client_connected(self, *, client_id: str, client_session: Session) -> None:
        self.cache.recheck_store()

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: Action | None = None
    ) -> bool:
        if session is None or topic is None or action is None:
            return False
        return self.check(session, topic, action)

    def check(self, session: Session, topic: str, action: Action) -> bool:
        """The decision, without a task: what the broker calls on every message."""
        if self.cache.allowed(session.username, _ACCESS[action], topic):
            return True
        self.refusals += 1
        level = logging.DEBUG if action is Action.RECEIVE else logging.WARNING
        log.log(level, "ACL refused %s of %r by client %r (%s)", action.value, topic,
                session.client_id, session.username)
        return False
