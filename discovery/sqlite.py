"""The discovery node's SQLite databases (the embedded default storage), kept off the event loop.

Each :class:`Database` has one writer thread that owns the only connection that writes (jobs run in
the order they were given) and a small pool of reader threads, each with a connection of its own
(WAL: readers see the last commit and never wait for the writer). The event loop only hands work
over and awaits it: a blocking read on the loop's own thread is refused, so a slow query can stall a
REST answer but never the broker or the bus that share the loop.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, ParamSpec, TypeVar

from discovery.storage import Database, Lease, SoleNode, Storage, refuse_on_the_event_loop

if TYPE_CHECKING:
    from discovery.storage import HistoryStore

log = logging.getLogger("kubmesh.discovery.sqlite")

T = TypeVar("T")
P = ParamSpec("P")


class SqliteStorage(Storage):
    """Files next to ``discovery.db`` in the data dir, one per store; one node per data dir."""

    kind = "sqlite"

    def __init__(self, registry_path: Path) -> None:
        self.directory = registry_path.parent
        self.registry_name = registry_path.name

    def open(self, migrate: bool = True) -> None:
        if migrate:
            self.directory.mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        pass

    def has(self, file_name: str) -> bool:
        return self._path(file_name).exists()

    def database(self, file_name: str, schema: str) -> SqliteDatabase:
        return SqliteDatabase(self._path(file_name), schema)

    def _path(self, file_name: str) -> Path:
        return self.directory / (self.registry_name if file_name == "discovery.db" else file_name)

    def history(self, raw_days: float = 30.0) -> HistoryStore:
        from discovery.sqlite_history import SqliteHistory

        return SqliteHistory(self.directory / "history.db")

    def lease(self, interval_s: float) -> Lease:
        return SoleNode()

    def check(self) -> str:
        probe = sqlite3.connect(self.directory / self.registry_name)
        try:
            probe.execute("SELECT 1").fetchone()
        finally:
            probe.close()
        return f"sqlite {sqlite3.sqlite_version} in {self.directory}"

    def describe(self) -> str:
        return f"sqlite ({self.directory})"


class SqliteDatabase(Database):
    mark: ClassVar[str] = "?"

    def __init__(self, path: Path, schema: str) -> None:
        super().__init__(path.name, "sqlite")
        self.path = path
        self.schema = schema
        self._connections: list[sqlite3.Connection] = []

    def open(self) -> None:
        """Create the file and its tables (blocking, once, before the node serves), start the writer."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = _connect(self.path)
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(self.schema)
        self._writer_db = db
        self._writer.start()

    def _release_readers(self) -> None:
        for connection in self._connections:
            connection.close()
        self._connections.clear()

    # ---- writing -----------------------------------------------------------------------------------

    def _write_loop(self) -> None:
        db = self._writer_db
        while (item := self._jobs.get()) is not None:
            job, future = item
            # a caller cancelled before the job ran (a stop, a REST client gone): skipped; once running,
            # the future can no longer be cancelled, so setting its result cannot kill this thread
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job(db))
            except Exception as exc:  # a write that fails is counted and its caller told; the next ones go on
                self.write_errors += 1
                if db.in_transaction:
                    db.execute("ROLLBACK")
                log.error("%s: a write failed: %s", self.path.name, exc)
                future.set_exception(exc)
        db.close()

    # ---- reading -----------------------------------------------------------------------------------

    async def read(self, query: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._readers, lambda: query(*args, **kwargs))

    def reader(self) -> sqlite3.Connection:
        refuse_on_the_event_loop(self.path.name)
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = _connect(self.path)
            connection.row_factory = sqlite3.Row
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection


def _connect(path: Path) -> sqlite3.Connection:
    # check_same_thread off only so that close() may close a reader's connection from another thread
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=5000")
    return db

