"""The tailnet's devices as last synced, matched to farms, in the node's storage (SQLite: ``tailnet.db`` next to
``discovery.db``).

A sync is written on the database's writer thread; the reads block (the manager keeps what it wrote in
memory and reads the store once, at start, off the event loop)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from contract.payloads import format_ts
from discovery.storage import Database, transaction, upsert

FILE = "tailnet.db"
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
    def __init__(self, db: Database) -> None:
        self.db = db

    async def replace(self, devices: list[dict[str, Any]], synced_at: datetime, source: str,
                      tailnet: str | None) -> None:
        """The tailnet as one sync saw it: devices gone from the tailnet go from the table too."""
        sync = {"synced_at": format_ts(synced_at), "source": source, "tailnet": tailnet}
        await self.db.write(lambda db: _replace(db, self.db.mark, devices, sync))

    def devices(self) -> list[dict[str, Any]]:
        rows = self.db.reader().execute(
            "SELECT record FROM devices ORDER BY farm_id IS NULL, farm_id, name").fetchall()
        return [json.loads(row["record"]) for row in rows]

    def last_sync(self) -> dict[str, Any]:
        row = self.db.reader().execute("SELECT synced_at, source, tailnet FROM sync WHERE id = 1").fetchone()
        return dict(row) if row else {"synced_at": None, "source": None, "tailnet": None}


def _replace(db: Any, mark: str, devices: list[dict[str, Any]], sync: dict[str, Any]) -> None:
    with transaction(db):
        db.execute("DELETE FROM devices")
        db.cursor().executemany(
            f"INSERT INTO devices (id, name, hostname, farm_id, online, record) VALUES ({', '.join([mark] * 6)})",
            [(device["id"], device["name"], device["hostname"], device["farm_id"],
              None if device["online"] is None else int(device["online"]), json.dumps(device)) for device in devices],
        )
        upsert(db, mark, "sync", {"id": 1}, sync)
