"""The discovery node's SQLite databases, kept off the event loop.

Each :class:`Database` has one writer thread that owns the only connection that writes (jobs run in
the order they were given) and a small pool of reader threads, each with a connection of its own
(WAL: readers see the last commit and never wait for the writer). The event loop only hands work
over and awaits it: a blocking read on the loop's own thread is refused, so a slow query can stall a
REST answer but never the broker or the bus that share the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

log = logging.getLogger("kubmesh.discovery.sqlite")

T = TypeVar("T")
P = ParamSpec("P")
Job = Callable[[sqlite3.Connection], Any]
READERS = 2


class OnTheEventLoop(RuntimeError):
    """A blocking database call was made from the event loop's thread."""


class Database:
    def __init__(self, path: Path, schema: str) -> None:
        self.path = path
        self.schema = schema
        self.write_errors = 0
        self._jobs: queue.SimpleQueue[tuple[Job, concurrent.futures.Future[Any]] | None] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write_loop, name=f"sqlite-writer:{path.name}", daemon=True)
        self._readers = concurrent.futures.ThreadPoolExecutor(READERS, thread_name_prefix=f"sqlite-reader:{path.name}")
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def open(self) -> None:
        """Create the file and its tables (blocking, once, before the node serves), start the writer."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = _connect(self.path)
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(self.schema)
        self._writer_db = db
        self._writer.start()

    def close(self) -> None:
        """Finish the writes already given, then close every connection."""
        if self._writer.is_alive():
            self._jobs.put(None)
            self._writer.join()
        self._readers.shutdown(wait=True)
        with self._lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()

    # ---- writing -----------------------------------------------------------------------------------

    def submit(self, job: Job) -> concurrent.futures.Future[Any]:
        """Queue a write; it runs on the writer thread, after every write queued before it."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._jobs.put((job, future))
        return future

    async def write(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """Queue a write and wait (without blocking the loop) until it is committed."""
        result: T = await asyncio.wrap_future(self.submit(job))
        return result

    def _write_loop(self) -> None:
        db = self._writer_db
        while (item := self._jobs.get()) is not None:
            job, future = item
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
        """Run the blocking ``query(*args)`` on a reader thread."""
        return await asyncio.get_running_loop().run_in_executor(self._readers, lambda: query(*args, **kwargs))

    def reader(self) -> sqlite3.Connection:
        """This thread's own read connection; refused on the event loop's thread."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise OnTheEventLoop(f"{self.path.name}: a blocking read on the event loop; use Database.read")
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


def upsert(db: sqlite3.Connection, table: str, keys: dict[str, Any], columns: dict[str, Any]) -> None:
    """Insert a row, or update the given columns of the row with these keys (names are ours, never input)."""
    names = [*keys, *columns]
    updates = ", ".join(f"{name} = excluded.{name}" for name in columns)
    db.execute(
        f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) "
        f"ON CONFLICT({', '.join(keys)}) DO UPDATE SET {updates}",
        [*keys.values(), *columns.values()],
    )
