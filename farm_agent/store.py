"""The agent's own SQLite file in its data dir: counters that must survive restarts and SIGKILL."""

from __future__ import annotations

import sqlite3
from pathlib import Path


class AgentStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")

    def next_seq(self) -> int:
        """The next reading number; committed before the reading leaves, so a restart never reuses one."""
        row = self._db.execute(
            "INSERT INTO kv (key, value) VALUES ('seq', 1) "
            "ON CONFLICT(key) DO UPDATE SET value = value + 1 RETURNING value"
        ).fetchone()
        return int(row[0])

    def close(self) -> None:
        self._db.close()
