"""The alerting's durable state in the node's data dir (``alerts.db``): alerts, every step taken,
recipients and their channels with each channel's health, and the farms heard of.

:class:`AlertStore` is plain synchronous SQLite, used as is by the ``kubmesh notify`` commands;
the running node reaches it only through :class:`StoreThread`, which runs every call on one worker
thread, so the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from contract.payloads import format_ts, parse_ts
from discovery.alerting.engine import Alert
from discovery.alerting.kinds import Severity

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY, farm_id TEXT NOT NULL, key TEXT NOT NULL, source TEXT NOT NULL, kind TEXT NOT NULL,
    severity TEXT NOT NULL, subject TEXT NOT NULL, since TEXT NOT NULL, opened TEXT NOT NULL,
    state TEXT NOT NULL, value REAL, limit_text TEXT, unit TEXT, latching INTEGER NOT NULL, tier INTEGER NOT NULL,
    notified TEXT, acknowledged_by TEXT, acknowledged TEXT, cleared TEXT
);
CREATE INDEX IF NOT EXISTS alerts_farm ON alerts (farm_id, opened);
CREATE INDEX IF NOT EXISTS alerts_state ON alerts (state);
CREATE TABLE IF NOT EXISTS steps (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, ts TEXT NOT NULL, farm_id TEXT, alert_ids TEXT NOT NULL,
    step TEXT NOT NULL, username TEXT, channel TEXT, delivered INTEGER, error TEXT
);
CREATE INDEX IF NOT EXISTS steps_farm ON steps (farm_id, seq);
CREATE INDEX IF NOT EXISTS steps_ts ON steps (ts);
CREATE TABLE IF NOT EXISTS told (
    alert_id TEXT NOT NULL, username TEXT NOT NULL, PRIMARY KEY (alert_id, username)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS recipients (
    username TEXT PRIMARY KEY, language TEXT NOT NULL DEFAULT 'ru', quiet_start TEXT, quiet_end TEXT,
    timezone TEXT
);
CREATE TABLE IF NOT EXISTS channels (
    username TEXT NOT NULL, url TEXT NOT NULL, severity TEXT NOT NULL, tier INTEGER NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0, last_error TEXT, last_attempt TEXT, last_ok TEXT,
    PRIMARY KEY (username, url)
);
CREATE TABLE IF NOT EXISTS farms (
    farm_id TEXT PRIMARY KEY, name TEXT, owner TEXT, last_heard TEXT
);
"""
TELLING_STEPS = ("opened", "reminder", "escalated")  # a user told by one of these gets the all clear
ALERT_COLUMNS = ("id", "farm_id", "key", "source", "kind", "severity", "subject", "since", "opened", "state",
                 "value", "limit_text", "unit", "latching", "tier", "notified", "acknowledged_by", "acknowledged",
                 "cleared")
T = TypeVar("T")


@dataclass(frozen=True)
class Channel:
    username: str
    url: str
    severity: Severity  # the lowest severity sent to it
    tier: int
    failures: int = 0  # consecutive failed deliveries
    last_error: str | None = None
    last_attempt: datetime | None = None
    last_ok: datetime | None = None

    @property
    def failing(self) -> bool:
        return self.failures > 0


@dataclass(frozen=True)
class Recipient:
    username: str
    language: str = "ru"
    quiet_start: str | None = None  # "22:00"
    quiet_end: str | None = None  # "06:00"
    timezone: str | None = None  # IANA name; None: the node's local time


@dataclass(frozen=True)
class Step:
    ts: datetime
    farm_id: str | None
    alert_ids: tuple[str, ...]
    step: str  # opened, reminder, escalated, cleared, acknowledged, deferred, test
    username: str | None = None
    channel: str | None = None
    delivered: bool | None = None
    error: str | None = None


@dataclass(frozen=True)
class KnownFarm:
    farm_id: str
    name: str | None
    owner: str | None
    last_heard: datetime | None


class AlertStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # one connection, used by one thread at a time (the worker thread, or a command line's main thread)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    # ---- alerts -------------------------------------------------------------------------------------

    def save_alerts(self, alerts: Iterable[Alert]) -> None:
        rows = [_alert_row(alert) for alert in alerts]
        if not rows:
            return
        marks = ", ".join("?" * len(ALERT_COLUMNS))
        with self._transaction():
            self._db.executemany(f"INSERT OR REPLACE INTO alerts ({', '.join(ALERT_COLUMNS)}) VALUES ({marks})", rows)

    def unresolved_alerts(self) -> list[Alert]:
        """Alerts not yet cleared: what the engine starts from after a restart."""
        return self._alerts("WHERE state != 'cleared' ORDER BY opened", ())

    def alerts(self, farm_id: str | None = None, state: str = "open", limit: int = 500) -> list[Alert]:
        """``state="open"``: not cleared (open or acknowledged); ``"all"``: the newest first, cleared too."""
        where, args = [], []
        if farm_id is not None:
            where.append("farm_id = ?")
            args.append(farm_id)
        if state == "open":
            where.append("state != 'cleared'")
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        return self._alerts(f"{clause} ORDER BY opened DESC LIMIT ?", (*args, limit))

    def _alerts(self, clause: str, args: tuple[Any, ...]) -> list[Alert]:
        rows = self._db.execute(f"SELECT {', '.join(ALERT_COLUMNS)} FROM alerts {clause}", args).fetchall()
        return [_alert(row) for row in rows]

    # ---- steps --------------------------------------------------------------------------------------

    def record(self, steps: Iterable[Step]) -> None:
        steps = list(steps)
        rows = [(format_ts(s.ts), s.farm_id, json.dumps(list(s.alert_ids)), s.step, s.username, s.channel,
                 None if s.delivered is None else int(s.delivered), s.error) for s in steps]
        told = [(alert_id, s.username) for s in steps if s.delivered and s.step in TELLING_STEPS and s.username
                for alert_id in s.alert_ids]
        with self._transaction():
            self._db.executemany("INSERT INTO steps (ts, farm_id, alert_ids, step, username, channel, delivered, "
                                 "error) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            self._db.executemany("INSERT OR IGNORE INTO told (alert_id, username) VALUES (?, ?)", told)

    def steps(self, farm_id: str | None = None, limit: int = 200) -> list[Step]:
        clause, args = ("WHERE farm_id = ?", (farm_id, limit)) if farm_id else ("", (limit,))
        rows = self._db.execute(
            f"SELECT ts, farm_id, alert_ids, step, username, channel, delivered, error FROM steps {clause} "
            "ORDER BY seq DESC LIMIT ?", args).fetchall()
        return [Step(parse_ts(r[0]), r[1], tuple(json.loads(r[2])), r[3], r[4], r[5],
                     None if r[6] is None else bool(r[6]), r[7]) for r in rows]

    def told(self, alert_ids: Iterable[str]) -> set[str]:
        """The users a message about any of these alerts was delivered to."""
        ids = list(alert_ids)
        if not ids:
            return set()
        rows = self._db.execute(f"SELECT DISTINCT username FROM told WHERE alert_id IN ({', '.join('?' * len(ids))})",
                                ids).fetchall()
        return {row[0] for row in rows}

    def prune(self, before: datetime) -> int:
        """Forget steps, and alerts cleared, older than ``before``; how many rows went."""
        cutoff = format_ts(before)
        with self._transaction():
            gone = self._db.execute("DELETE FROM steps WHERE ts < ?", (cutoff,)).rowcount
            old = "SELECT id FROM alerts WHERE state = 'cleared' AND cleared < ?"
            gone += self._db.execute(f"DELETE FROM told WHERE alert_id IN ({old})", (cutoff,)).rowcount
            gone += self._db.execute("DELETE FROM alerts WHERE state = 'cleared' AND cleared < ?", (cutoff,)).rowcount
        return gone

    # ---- recipients and channels ----------------------------------------------------------------------

    def add_channel(self, username: str, url: str, severity: Severity, tier: int) -> None:
        with self._transaction():
            self._db.execute("INSERT OR IGNORE INTO recipients (username) VALUES (?)", (username,))
            self._db.execute(
                "INSERT INTO channels (username, url, severity, tier) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (username, url) DO UPDATE SET severity = excluded.severity, tier = excluded.tier",
                (username, url, severity.value, tier))

    def remove_channel(self, username: str, url: str) -> bool:
        cursor = self._db.execute("DELETE FROM channels WHERE username = ? AND url = ?", (username, url))
        return cursor.rowcount > 0

    def set_preferences(self, username: str, **preferences: str | None) -> None:
        allowed = {"language", "quiet_start", "quiet_end", "timezone"}
        unknown = set(preferences) - allowed
        if unknown:
            raise ValueError(f"unknown preference {sorted(unknown)[0]!r}")
        with self._transaction():
            self._db.execute("INSERT OR IGNORE INTO recipients (username) VALUES (?)", (username,))
            for name, value in preferences.items():
                self._db.execute(f"UPDATE recipients SET {name} = ? WHERE username = ?", (value, username))

    def recipients(self) -> dict[str, Recipient]:
        rows = self._db.execute("SELECT username, language, quiet_start, quiet_end, timezone FROM recipients")
        return {r[0]: Recipient(*r) for r in rows.fetchall()}

    def channels(self, username: str | None = None) -> list[Channel]:
        clause, args = ("WHERE username = ?", (username,)) if username else ("", ())
        rows = self._db.execute(
            "SELECT username, url, severity, tier, failures, last_error, last_attempt, last_ok FROM channels "
            f"{clause} ORDER BY username, tier, url", args).fetchall()
        return [Channel(r[0], r[1], Severity(r[2]), r[3], r[4], r[5], _ts(r[6]), _ts(r[7])) for r in rows]

    def channel_result(self, username: str, url: str, ok: bool, error: str | None, now: datetime) -> None:
        if ok:
            self._db.execute("UPDATE channels SET failures = 0, last_error = NULL, last_attempt = ?, last_ok = ? "
                             "WHERE username = ? AND url = ?", (format_ts(now), format_ts(now), username, url))
        else:
            self._db.execute("UPDATE channels SET failures = failures + 1, last_error = ?, last_attempt = ? "
                             "WHERE username = ? AND url = ?", (error, format_ts(now), username, url))

    # ---- farms --------------------------------------------------------------------------------------

    def save_farms(self, farms: Iterable[KnownFarm]) -> None:
        rows = [(f.farm_id, f.name, f.owner, None if f.last_heard is None else format_ts(f.last_heard)) for f in farms]
        with self._transaction():
            self._db.executemany("INSERT OR REPLACE INTO farms (farm_id, name, owner, last_heard) VALUES (?, ?, ?, ?)",
                                 rows)

    def farms(self) -> list[KnownFarm]:
        rows = self._db.execute("SELECT farm_id, name, owner, last_heard FROM farms").fetchall()
        return [KnownFarm(r[0], r[1], r[2], _ts(r[3])) for r in rows]

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, *_: object) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")


class StoreThread:
    """The store for the event loop: each call runs on the store's one worker thread."""

    def __init__(self, store: AlertStore) -> None:
        self.store = store
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="alerts-db")

    async def call(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(method, *args, **kwargs))

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.store.close()


def _alert_row(alert: Alert) -> tuple[Any, ...]:
    return (alert.id, alert.farm_id, alert.key, alert.source, alert.kind, alert.severity.value, alert.subject,
            format_ts(alert.since), format_ts(alert.opened), alert.state, alert.value, alert.limit, alert.unit,
            int(alert.latching), alert.tier, _text(alert.notified), alert.acknowledged_by, _text(alert.acknowledged),
            _text(alert.cleared))


def _alert(row: tuple[Any, ...]) -> Alert:
    (id_, farm_id, key, source, kind, severity, subject, since, opened, state, value, limit, unit, latching, tier,
     notified, acknowledged_by, acknowledged, cleared) = row
    return Alert(id=id_, farm_id=farm_id, key=key, source=source, kind=kind, severity=Severity(severity),
                 subject=subject, since=parse_ts(since), opened=parse_ts(opened), state=state, value=value,
                 limit=limit, unit=unit, latching=bool(latching), tier=tier, notified=_ts(notified),
                 acknowledged_by=acknowledged_by, acknowledged=_ts(acknowledged), cleared=_ts(cleared))


def _text(moment: datetime | None) -> str | None:
    return None if moment is None else format_ts(moment)


def _ts(text: str | None) -> datetime | None:
    return None if text is None else parse_ts(text)
