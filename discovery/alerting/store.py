"""The alerting's durable state in the node's storage (SQLite: ``alerts.db`` in the data dir; PostgreSQL: the
tables of migration 0002, shared by every node): alerts, every step taken, recipients and their channels with
each channel's health, and the farms heard of.

:class:`AlertStore` blocks: its writes go to the database's writer thread and wait for the commit, its reads
run on the calling thread's reader connection. The ``kubmesh notify`` commands use it as is; the running node
reaches it only through :class:`StoreThread`, which runs every call on one worker thread, so the event loop
never waits on the disk.

Several nodes write the same alert rows, so a write is merged with the row (:data:`MERGE`) rather than
replacing it: an alert's state only goes forward (open, acknowledged, cleared), the first acknowledgement and
the first clearing stay, the tier and the last notification take the highest; whatever order the nodes'
writes come in, the row ends the same. One alert not yet cleared per farm and condition
(``alerts_unresolved``): a node that opened one another node had opened first is told the stored one and takes
its id.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from contract.payloads import format_ts, parse_ts
from discovery.alerting.engine import Alert
from discovery.alerting.kinds import Severity
from discovery.storage import Database, Storage, opened_database, transaction, upsert

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY, farm_id TEXT NOT NULL, key TEXT NOT NULL, source TEXT NOT NULL, kind TEXT NOT NULL,
    severity TEXT NOT NULL, subject TEXT NOT NULL, since TEXT NOT NULL, opened TEXT NOT NULL,
    state TEXT NOT NULL, value REAL, limit_text TEXT, unit TEXT, latching INTEGER NOT NULL, tier INTEGER NOT NULL,
    notified TEXT, acknowledged_by TEXT, acknowledged TEXT, cleared TEXT
);
CREATE INDEX IF NOT EXISTS alerts_farm ON alerts (farm_id, opened);
CREATE INDEX IF NOT EXISTS alerts_state ON alerts (state);
CREATE UNIQUE INDEX IF NOT EXISTS alerts_unresolved ON alerts (farm_id, key) WHERE state != 'cleared';
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
CREATE TABLE IF NOT EXISTS alert_farms (
    farm_id TEXT PRIMARY KEY, name TEXT, owner TEXT, last_heard TEXT
);
"""
FILE = "alerts.db"
TELLING_STEPS = ("opened", "reminder", "escalated")  # a user told by one of these gets the all clear
ALERT_COLUMNS = ("id", "farm_id", "key", "source", "kind", "severity", "subject", "since", "opened", "state",
                 "value", "limit_text", "unit", "latching", "tier", "notified", "acknowledged_by", "acknowledged",
                 "cleared")
# how a write of an alert meets the row already there (``alerts``: the row; ``excluded``: the write)
MERGE = """
    state = CASE WHEN alerts.state = 'cleared' OR excluded.state = 'cleared' THEN 'cleared'
                 WHEN alerts.state = 'acknowledged' OR excluded.state = 'acknowledged' THEN 'acknowledged'
                 ELSE 'open' END,
    acknowledged_by = COALESCE(alerts.acknowledged_by, excluded.acknowledged_by),
    acknowledged = COALESCE(alerts.acknowledged, excluded.acknowledged),
    cleared = COALESCE(alerts.cleared, excluded.cleared),
    tier = CASE WHEN excluded.tier > alerts.tier THEN excluded.tier ELSE alerts.tier END,
    notified = CASE WHEN alerts.notified IS NULL OR excluded.notified > alerts.notified THEN excluded.notified
                    ELSE alerts.notified END,
    value = excluded.value, subject = excluded.subject, limit_text = excluded.limit_text, unit = excluded.unit
"""
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
    """Blocking: never called on the event loop (see :class:`StoreThread`)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def open(self) -> None:
        self.db.open()
        self.upgrade()

    def upgrade(self) -> None:
        """Bring data of an earlier version's alerts.db to where this one looks for it (SQLite only: PostgreSQL
        has its migrations)."""
        if self.db.mark == "?":
            self._write(_adopt_legacy_farms)

    def close(self) -> None:
        self.db.close()

    def _sql(self, text: str) -> str:
        """The statement with the driver's parameter mark (written here with sqlite3's ``?``)."""
        return text if self.db.mark == "?" else text.replace("?", self.db.mark)

    def _write(self, job: Callable[[Any], T]) -> T:
        result: T = self.db.submit(job).result()
        return result

    def _rows(self, sql: str, args: Iterable[Any] = ()) -> list[Any]:
        return list(self.db.reader().execute(self._sql(sql), tuple(args)).fetchall())

    # ---- alerts -------------------------------------------------------------------------------------

    def save_alerts(self, alerts: Iterable[Alert]) -> list[Alert]:
        """Merge the alerts into their rows; those another node had opened first (under another id), as stored."""
        rows = [_alert_row(alert) for alert in alerts]
        if not rows:
            return []
        return self._write(lambda db: self._merge_alerts(db, rows))

    def _merge_alerts(self, db: Any, rows: list[tuple[Any, ...]]) -> list[Alert]:
        names, marks = ", ".join(ALERT_COLUMNS), ", ".join("?" * len(ALERT_COLUMNS))
        insert = self._sql(f"INSERT INTO alerts ({names}) VALUES ({marks}) ON CONFLICT DO NOTHING")
        merge = self._sql(f"INSERT INTO alerts ({names}) VALUES ({marks}) ON CONFLICT (id) DO UPDATE SET {MERGE}")
        exists = self._sql("SELECT 1 FROM alerts WHERE id = ?")
        lost = []
        with transaction(db):
            for row in rows:
                if db.execute(exists, (row[0],)).fetchone() is not None:
                    db.execute(merge, row)
                elif db.execute(insert, row).rowcount == 0:  # another alert of the farm's condition is not cleared
                    lost.append(row[1:3])
            found = self._sql(f"SELECT {names} FROM alerts WHERE farm_id = ? AND key = ? AND state != 'cleared'")
            stored = [db.execute(found, farm_key).fetchone() for farm_key in lost]
        return [_alert(row) for row in stored if row is not None]  # None: cleared since, by another node

    def unresolved_alerts(self) -> list[Alert]:
        """Alerts not yet cleared: what the engine starts from after a restart."""
        return self._alerts("WHERE state != 'cleared' ORDER BY opened", ())

    def current(self, ids: Iterable[str]) -> list[Alert]:
        """The alerts not yet cleared, and those of ``ids`` whatever their state: what every node wrote of the
        alerts its engine holds, and of those other nodes opened."""
        ids = list(ids)
        also = f" OR id IN ({', '.join('?' * len(ids))})" if ids else ""
        return self._alerts(f"WHERE state != 'cleared'{also}", ids)

    def alerts(self, farm_id: str | None = None, state: str = "open", limit: int = 500) -> list[Alert]:
        """``state="open"``: not cleared (open or acknowledged); ``"all"``: the newest first, cleared too."""
        where, args = [], []
        if farm_id is not None:
            where.append("farm_id = ?")
            args.append(farm_id)
        if state == "open":
            where.append("state != 'cleared'")
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        return self._alerts(f"{clause} ORDER BY opened DESC, id LIMIT ?", (*args, limit))

    def _alerts(self, clause: str, args: Iterable[Any]) -> list[Alert]:
        return [_alert(row) for row in self._rows(f"SELECT {', '.join(ALERT_COLUMNS)} FROM alerts {clause}", args)]

    # ---- steps --------------------------------------------------------------------------------------

    def record(self, steps: Iterable[Step]) -> None:
        steps = list(steps)
        rows = [(format_ts(s.ts), s.farm_id, json.dumps(list(s.alert_ids)), s.step, s.username, s.channel,
                 None if s.delivered is None else int(s.delivered), s.error) for s in steps]
        told = [(alert_id, s.username) for s in steps if s.delivered and s.step in TELLING_STEPS and s.username
                for alert_id in s.alert_ids]
        if not rows:
            return

        def job(db: Any) -> None:
            with transaction(db):
                db.cursor().executemany(self._sql(
                    "INSERT INTO steps (ts, farm_id, alert_ids, step, username, channel, delivered, error) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"), rows)
                if told:
                    db.cursor().executemany(self._sql(
                        "INSERT INTO told (alert_id, username) VALUES (?, ?) ON CONFLICT DO NOTHING"), told)

        self._write(job)

    def steps(self, farm_id: str | None = None, limit: int = 200) -> list[Step]:
        clause, args = ("WHERE farm_id = ?", (farm_id, limit)) if farm_id else ("", (limit,))
        rows = self._rows(f"SELECT ts, farm_id, alert_ids, step, username, channel, delivered, error FROM steps "
                          f"{clause} ORDER BY seq DESC LIMIT ?", args)
        return [Step(parse_ts(r[0]), r[1], tuple(json.loads(r[2])), r[3], r[4], r[5],
                     None if r[6] is None else bool(r[6]), r[7]) for r in rows]

    def told(self, alert_ids: Iterable[str]) -> set[str]:
        """The users a message about any of these alerts was delivered to."""
        ids = list(alert_ids)
        if not ids:
            return set()
        rows = self._rows(f"SELECT DISTINCT username FROM told WHERE alert_id IN ({', '.join('?' * len(ids))})", ids)
        return {row[0] for row in rows}

    def prune(self, before: datetime) -> int:
        """Forget steps, and alerts cleared, older than ``before``; how many rows went."""
        cutoff = (format_ts(before),)
        old = "SELECT id FROM alerts WHERE state = 'cleared' AND cleared < ?"

        def job(db: Any) -> int:
            with transaction(db):
                gone: int = db.execute(self._sql("DELETE FROM steps WHERE ts < ?"), cutoff).rowcount
                gone += db.execute(self._sql(f"DELETE FROM told WHERE alert_id IN ({old})"), cutoff).rowcount
                gone += db.execute(self._sql("DELETE FROM alerts WHERE state = 'cleared' AND cleared < ?"),
                                   cutoff).rowcount
            return gone

        return self._write(job)

    # ---- recipients and channels ----------------------------------------------------------------------

    def add_channel(self, username: str, url: str, severity: Severity, tier: int) -> None:
        def job(db: Any) -> None:
            with transaction(db):
                self._ensure_recipient(db, username)
                upsert(db, self.db.mark, "channels", {"username": username, "url": url},
                       {"severity": severity.value, "tier": tier})

        self._write(job)

    def remove_channel(self, username: str, url: str) -> bool:
        sql = self._sql("DELETE FROM channels WHERE username = ? AND url = ?")
        return bool(self._write(lambda db: db.execute(sql, (username, url)).rowcount > 0))

    def set_preferences(self, username: str, **preferences: str | None) -> None:
        allowed = {"language", "quiet_start", "quiet_end", "timezone"}
        unknown = set(preferences) - allowed
        if unknown:
            raise ValueError(f"unknown preference {sorted(unknown)[0]!r}")

        def job(db: Any) -> None:
            with transaction(db):
                self._ensure_recipient(db, username)
                for name, value in preferences.items():
                    db.execute(self._sql(f"UPDATE recipients SET {name} = ? WHERE username = ?"), (value, username))

        self._write(job)

    def _ensure_recipient(self, db: Any, username: str) -> None:
        db.execute(self._sql("INSERT INTO recipients (username) VALUES (?) ON CONFLICT DO NOTHING"), (username,))

    def recipients(self) -> dict[str, Recipient]:
        rows = self._rows("SELECT username, language, quiet_start, quiet_end, timezone FROM recipients")
        return {r[0]: Recipient(*r) for r in rows}

    def channels(self, username: str | None = None) -> list[Channel]:
        clause, args = ("WHERE username = ?", (username,)) if username else ("", ())
        rows = self._rows("SELECT username, url, severity, tier, failures, last_error, last_attempt, last_ok "
                          f"FROM channels {clause} ORDER BY username, tier, url", args)
        return [Channel(r[0], r[1], Severity(r[2]), r[3], r[4], r[5], _ts(r[6]), _ts(r[7])) for r in rows]

    def channel_result(self, username: str, url: str, ok: bool, error: str | None, now: datetime) -> None:
        at = format_ts(now)
        args: tuple[str | None, ...]
        if ok:
            sql, args = ("UPDATE channels SET failures = 0, last_error = NULL, last_attempt = ?, last_ok = ? "
                         "WHERE username = ? AND url = ?", (at, at, username, url))
        else:
            sql, args = ("UPDATE channels SET failures = failures + 1, last_error = ?, last_attempt = ? "
                         "WHERE username = ? AND url = ?", (error, at, username, url))
        self._write(lambda db: db.execute(self._sql(sql), args))

    # ---- farms --------------------------------------------------------------------------------------

    def save_farms(self, farms: Iterable[KnownFarm]) -> None:
        rows = [({"farm_id": f.farm_id}, {"name": f.name, "owner": f.owner, "last_heard": _text(f.last_heard)})
                for f in farms]

        def job(db: Any) -> None:
            with transaction(db):
                for keys, columns in rows:
                    upsert(db, self.db.mark, "alert_farms", keys, columns)

        if rows:
            self._write(job)

    def farms(self) -> list[KnownFarm]:
        rows = self._rows("SELECT farm_id, name, owner, last_heard FROM alert_farms")
        return [KnownFarm(r[0], r[1], r[2], _ts(r[3])) for r in rows]


@contextmanager
def opened_alert_store(storage: Storage) -> Iterator[AlertStore]:
    """The alert store of an opened storage, for a command line."""
    with opened_database(storage, FILE, SCHEMA) as db:
        store = AlertStore(db)
        store.upgrade()
        yield store


def _adopt_legacy_farms(db: Any) -> None:
    """alerts.db of a version before the stores shared one PostgreSQL kept the farms heard of as ``farms``."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'farms'").fetchone() is None:
        return
    with transaction(db):
        # WHERE true: without it, SQLite would read the ON of ON CONFLICT as a join's
        db.execute("INSERT INTO alert_farms SELECT farm_id, name, owner, last_heard FROM farms WHERE true "
                   "ON CONFLICT DO NOTHING")
        db.execute("DROP TABLE farms")


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
