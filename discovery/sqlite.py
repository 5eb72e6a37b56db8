"""The discovery node's SQLite helpers."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any


def connect(path: Path) -> sqlite3.Connection:
    """A WAL database used from the event loop (and, guarded by the caller's lock, from other threads)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def upsert(db: sqlite3.Connection, table: str, keys: dict[str, Any], columns: dict[str, Any]) -> None:
    """Insert a row, or update the given columns of the row with these keys (names are ours, never input)."""
    names = [*keys, *columns]
    updates = ", ".join(f"{name} = excluded.{name}" for name in columns)
    db.execute(
        f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) "
        f"ON CONFLICT({', '.join(keys)}) DO UPDATE SET {updates}",
        [*keys.values(), *columns.values()],
    )
