"""The farm registry and presence, in the node's storage: what the discovery node knows of every farm.

Writes are queued to the database's writer thread and return at once; the reads block, so the REST
API runs them through :meth:`Database.read <discovery.sqlite.Database.read>`.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from typing import Any

from contract.payloads import Alarms, Heartbeat, Meta, Reading, Status, format_ts
from discovery.storage import Database, upsert

FILE = "discovery.db"
SCHEMA = """
CREATE TABLE IF NOT EXISTS farms (
    farm_id TEXT PRIMARY KEY,
    name TEXT,
    owner_id TEXT,
    location TEXT,
    online INTEGER NOT NULL DEFAULT 0,
    status_ts TEXT,
    status_reason TEXT,
    last_seen TEXT,
    meta TEXT,
    heartbeat TEXT,
    state TEXT,
    alarms TEXT
);
"""


class Registry:
    def __init__(self, db: Database) -> None:
        self.db = db

    def _touch(self, farm_id: str, seen: datetime, **columns: Any) -> None:
        row = {"last_seen": format_ts(seen), **columns}
        self.db.submit(lambda db: upsert(db, self.db.mark, "farms", {"farm_id": farm_id}, row))

    def record_status(self, farm_id: str, status: Status, seen: datetime) -> None:
        self._touch(farm_id, seen, online=int(status.state == "online"), status_ts=format_ts(status.ts),
                    status_reason=status.reason)

    def record_meta(self, farm_id: str, meta: Meta, seen: datetime) -> None:
        self._touch(farm_id, seen, name=meta.name, owner_id=meta.owner_id, location=meta.location,
                    meta=meta.model_dump_json(exclude_none=True))

    def record_heartbeat(self, farm_id: str, heartbeat: Heartbeat, seen: datetime) -> None:
        self._touch(farm_id, seen, heartbeat=heartbeat.model_dump_json(exclude_none=True))

    def record_state(self, farm_id: str, reading: Reading, seen: datetime) -> None:
        self._touch(farm_id, seen, state=reading.model_dump_json(exclude_none=True))

    def record_alarms(self, farm_id: str, alarms: Alarms, seen: datetime) -> None:
        self._touch(farm_id, seen, alarms=alarms.model_dump_json(exclude_none=True))

    # ---- reading (blocking) ----------------------------------------------------------------------------

    def farms(self, owner: str | None = None) -> list[dict[str, Any]]:
        where = f" WHERE owner_id = {self.db.mark}" if owner is not None else ""
        query = f"SELECT * FROM farms{where} ORDER BY farm_id"
        rows = self.db.reader().execute(query, (owner,) if owner is not None else ()).fetchall()
        return [_summary(row) for row in rows]

    def farm(self, farm_id: str) -> dict[str, Any] | None:
        row = self.db.reader().execute(f"SELECT * FROM farms WHERE farm_id = {self.db.mark}", (farm_id,)).fetchone()
        if row is None:
            return None
        return {**_summary(row), "state": _json(row["state"]), "alarms": _json(row["alarms"])}

    def presence(self) -> Counter[bool]:
        """How many farms are online (True) and offline (False)."""
        rows = self.db.reader().execute("SELECT online, COUNT(*) FROM farms GROUP BY online").fetchall()
        return Counter({bool(online): count for online, count in rows})

    def count(self) -> int:
        return int(self.db.reader().execute("SELECT COUNT(*) FROM farms").fetchone()[0])

    def healthy(self) -> bool:
        try:
            self.db.reader().execute("SELECT 1").fetchone()
        except Exception:  # any driver's error, or a server gone: the node is degraded, /health says so
            return False
        return True


def _json(text: str | None) -> Any:
    return json.loads(text) if text else None


def _summary(row: Any) -> dict[str, Any]:
    return {
        "farm_id": row["farm_id"],
        "name": row["name"] or row["farm_id"],
        "owner_id": row["owner_id"],
        "location": row["location"],
        "online": bool(row["online"]),
        "status_ts": row["status_ts"],
        "status_reason": row["status_reason"],
        "last_seen": row["last_seen"],
        "heartbeat": _json(row["heartbeat"]),
        "meta": _json(row["meta"]),
    }
