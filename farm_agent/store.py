"""The agent's own SQLite file in its data dir: counters that must survive restarts and SIGKILL."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class AgentStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All or nothing: a reading's number and its place in the queue are committed together."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def next_seq(self) -> int:
        """The next reading number; committed before the reading leaves, so a restart never reuses one."""
        return self.add("seq", 1)

    def last_seq(self) -> int:
        return self.get("seq")

    def add(self, key: str, amount: int) -> int:
        row = self.db.execute(
            "INSERT INTO kv (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = value + ? RETURNING value",
            (key, amount, amount),
        ).fetchone()
        return int(row[0])

    def get(self, key: str) -> int:
        row = self.db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self.db.close()
