"""The agent's own SQLite file in its data dir: counters that must survive restarts and SIGKILL."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Once a checkpoint has emptied the write-ahead log, it is cut back to this size: a Raspberry Pi's
# SD card keeps no megabytes of stale log, and a full disk is noticed at the next write, not after
# the log's old length has been written over again.
WAL_SIZE_LIMIT = 64 * 1024


class AgentStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        self.db.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All or nothing: a reading's number and its place in the queue are committed together.

        A full disk may fail the COMMIT itself, and SQLite may already have rolled back on its own:
        either way the connection is left out of the transaction, ready for the next one.
        """
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise

    def set(self, key: str, value: int) -> None:
        self.db.execute(
            "INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def get(self, key: str) -> int:
        row = self.db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self.db.close()
