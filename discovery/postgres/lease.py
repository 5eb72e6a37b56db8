"""The lease on the duties that must run on one node at a time: a session-level PostgreSQL advisory lock, held
on a connection of its own (not the pool's: a pooled connection is shared and reset).

Every ``interval_s`` a node that does not hold it tries ``pg_try_advisory_lock``; the one that holds it checks
that its session is alive. The server releases the lock when the holder's session ends: at once when the
holder's process dies (its socket closes), and after the TCP keepalives (``KEEPALIVE``: 10 s idle, then 3
probes 5 s apart, 25 s) when its host or its link is gone. So another node takes over within ``interval_s``
of the holder's death, and within 25 s + ``interval_s`` of a lost host. A holder that cannot reach the server
gives the duties up at its next check, which fails within ``tcp_user_timeout`` (10 s): before the server
frees the lock, so two nodes never run them at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import psycopg

from discovery.storage import Lease

log = logging.getLogger("kubmesh.discovery.lease")

LEASE_LOCK = 0x6B75626D6C656173  # "kubmleas"
KEEPALIVE: dict[str, Any] = {
    "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
    "tcp_user_timeout": 10_000, "connect_timeout": 10,
    # the server's side of the same keepalives, so that it ends a lost holder's session (and frees the lock)
    "options": "-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3",
}


class AdvisoryLease(Lease):
    def __init__(self, url: str, interval_s: float, key: int = LEASE_LOCK) -> None:
        self.url = url
        self.interval_s = interval_s
        self.key = key
        self.changes = 0  # times this node took or lost the lease
        self._held = False
        self._connection: psycopg.Connection[Any] | None = None

    @property
    def held(self) -> bool:
        return self._held

    def health(self) -> dict[str, Any]:
        return {"held": self._held, "interval_s": self.interval_s, "changes": self.changes}

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    held = await asyncio.to_thread(self._attempt)
                except psycopg.Error as exc:  # the server unreachable: this node runs none of the duties
                    if self._held:
                        log.warning("lost the lease on the one-node duties: %s", exc)
                    held = False
                    await asyncio.to_thread(self._drop)
                self._change(held)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval_s)
        finally:
            self._change(False)
            await asyncio.to_thread(self._drop)  # the session's end releases the lock

    def _change(self, held: bool) -> None:
        if held != self._held:
            self.changes += 1
            log.info("%s the lease on the one-node duties (retention, tailnet sync, notifications)",
                     "took" if held else "gave up")
        self._held = held

    def _attempt(self) -> bool:
        if self._connection is None or self._connection.closed:
            self._connection = psycopg.connect(self.url, autocommit=True, application_name="kubmesh-lease",
                                               **KEEPALIVE)
        if self._held:
            self._connection.execute("SELECT 1")  # the session lives, so the lock is still ours
            return True
        row = self._connection.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
        return bool(row and row[0])

    def _drop(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(psycopg.Error):
                self._connection.close()
            self._connection = None
