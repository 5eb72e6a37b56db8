"""What makes the embedded broker authenticate and confine every client.

Both read the identity store of the broker's data dir, so identities added,
rotated or removed by ``kubmesh farm``/``kubmesh user`` apply without a restart:
credentials at the next connect, topic rights at the next connect or within
``AclCache.RECHECK_S`` for a client already connected.
"""

from __future__ import annotations

import logging
import os
import time

from broker.acl import Access, AclRules
from common.identities import Identity, IdentityStore, StoreError
from contract.topics import Topics

log = logging.getLogger("kubmesh.broker")


class IdentityAuth:
    """Accepts a CONNECT only with a username and secret that match the identity store."""

    def __init__(self, store: IdentityStore) -> None:
        self.store = store

    def authenticate(self, username: str | None, password: str | None) -> Identity | str:
        """The identity these credentials prove, or why not."""
        if not username:
            return "no username"
        try:
            identity = self.store.authenticate(username, password)
        except StoreError as exc:
            log.error("refusing %r: %s", username, exc)
            return f"the identity store cannot be read: {exc}"
        return identity if identity is not None else f"bad credentials for {username!r}"


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


class TopicAcl:
    """Applies :class:`broker.acl.AclRules` to every publish, subscribe and delivery, through an :class:`AclCache`."""

    def __init__(self, store: IdentityStore, topics: Topics, ha_prefix: str) -> None:
        self.rules = AclRules(topics, ha_prefix)
        self.cache = AclCache(store, self.rules)
        self.refusals = 0

    def check(self, username: str | None, client_id: str | None, topic: str, access: Access) -> bool:
        if self.cache.allowed(username, access, topic):
            return True
        self.refusals += 1
        level = logging.DEBUG if access is Access.RECEIVE else logging.WARNING
        log.log(level, "ACL refused %s of %r by client %r (%s)", access.value, topic, client_id, username)
        return False
