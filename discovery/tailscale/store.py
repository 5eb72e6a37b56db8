"""The tailnet's devices as last synced, matched to farms, in SQLite (``tailnet.db`` next to ``discovery.db``)."""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from contract.payloads import format_ts
from discovery.sqlite import connect, upsert

SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hostname TEXT NOT NULL,
    farm_id TEXT,
    online INTEGER,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sync (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    synced_at TEXT,
    source TEXT,
    tailnet TEXT
);
"""


class TailnetStore:
    def __init__(self, path: Path) -> None:
        self._db = connect(path)
        self._db.row_factory = sqlite3.Row
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def replace(self, devices: list[dict[str, Any]], synced_at: datetime, source: str, tailnet: str | None) -> None:
        """The tailnet as one sync saw it: devices gone from the tailnet go from the table too."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.execute("DELETE FROM devices")
                for device in devices:
                    self._db.execute(
                        "INSERT INTO devices (id, name, hostname, farm_id, online, record) VALUES (?, ?, ?, ?, ?, ?)",
                        (device["id"], device["name"], device["hostname"], device["farm_id"],
                         None if device["online"] is None else int(device["online"]), json.dumps(device)),
                    )
                upsert(self._db, "sync", {"id": 1},
                       {"synced_at": format_ts(synced_at), "source": source, "tailnet": tailnet})
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def devices(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT record FROM devices ORDER BY farm_id IS NULL, farm_id, name").fetchall()
        return [json.loads(row["record"]) for row in rows]

    def last_sync(self) -> dict[str, Any]:
        with self._lock:
            row = self._db.execute("SELECT synced_at, source, tailnet FROM sync WHERE id = 1").fetchone()
        return dict(row) if row else {"synced_at": None, "source": None, "tailnet": None}

    def close(self) -> None:
        self._db.close()
