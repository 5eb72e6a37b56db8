"""A store's tables on PostgreSQL with the thread model of :class:`discovery.sqlite.SqliteDatabase`: one writer
thread whose jobs run in order on one connection (what is queued together committed together), reads on
reader threads, every connection from the storage's pool (psycopg_pool). A write that fails on a broken
connection gives it back to the pool, which replaces it: the next write goes on after the server is back,
without a restart."""

from __future__ import annotations

import asyncio
import logging
import queue
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, ClassVar, ParamSpec, TypeVar

from psycopg import Connection, Cursor, pq

from discovery.storage import Database, Job, refuse_on_the_event_loop

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

log = logging.getLogger("kubmesh.discovery.postgres")

T = TypeVar("T")
P = ParamSpec("P")
WRITE_BATCH = 500  # jobs at most in one transaction


class Row(tuple[Any, ...]):
    """A row indexable by position and by column name (and ``dict(row)``), as ``sqlite3.Row`` is."""

    _index: dict[str, int]

    def __new__(cls, values: Sequence[Any], index: dict[str, int]) -> Row:
        row = super().__new__(cls, values)
        row._index = index
        return row

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return super().__getitem__(self._index[key])
        return super().__getitem__(key)

    def keys(self) -> list[str]:
        return list(self._index)


def rows(cursor: Cursor[Any]) -> Callable[[Sequence[Any]], Row]:
    """psycopg's row factory for :class:`Row`."""
    index = {column.name: i for i, column in enumerate(cursor.description or [])}
    return lambda values: Row(values, index)


class PostgresDatabase(Database):
    mark: ClassVar[str] = "%s"

    def __init__(self, name: str, pool: Callable[[], ConnectionPool[Any]]) -> None:
        super().__init__(f"postgresql:{name}", "pg")
        self._pool = pool  # the storage's, opened before the node serves
        self._kept: list[Connection[Any]] = []  # reader connections held by threads outside read()

    def open(self) -> None:
        self._writer.start()

    def _release_readers(self) -> None:
        for connection in self._kept:
            self._pool().putconn(connection)
        self._kept.clear()

    def _write_loop(self) -> None:
        connection: Connection[Any] | None = None
        stopping = False
        while not stopping and (item := self._jobs.get()) is not None:
            batch = [item]
            while len(batch) < WRITE_BATCH:  # what else is queued goes in the same transaction
                try:
                    queued = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if queued is None:
                    stopping = True
                    break
                batch.append(queued)
            # a caller cancelled before its job ran (a stop, a REST client gone): skipped; once running, the
            # future can no longer be cancelled, so setting its result cannot kill this thread
            batch = [job for job in batch if job[1].set_running_or_notify_cancel()]
            if batch:
                connection = self._run(connection, batch)
        if connection is not None:
            self._pool().putconn(connection)

    def _run(self, connection: Connection[Any] | None, batch: list[tuple[Job, Future[Any]]]) -> Connection[Any] | None:
        """The jobs in one transaction (one commit, one flush of the server's log, for a burst of upserts); their
        callers hear of their results once it has committed. If it fails, each job runs again alone (the jobs are
        upserts and inserts that ignore what is there), so that a failing write fails alone and the others are
        written."""
        try:
            if connection is None:
                connection = self._pool().getconn()
            with connection.transaction():
                results = [job(connection) for job, _ in batch]
        except Exception as exc:
            if connection is not None and len(batch) > 1 and not connection.broken:
                for job in batch:
                    connection = self._run(connection, [job])
                return connection
            self.write_errors += len(batch)  # a write that fails is counted and its caller told; the next ones go on
            log.error("%s: %d write(s) failed: %s", self.name, len(batch), exc)
            for _, future in batch:
                future.set_exception(exc)
            return self._recover(connection) if connection is not None else None
        for (_, future), result in zip(batch, results, strict=True):
            future.set_result(result)
        return connection

    def _recover(self, connection: Connection[Any]) -> Connection[Any] | None:
        """The writer's connection after a failed job: rolled back, or given back to the pool if broken."""
        if not connection.broken and connection.info.transaction_status != pq.TransactionStatus.UNKNOWN:
            try:
                connection.rollback()
                return connection
            except Exception:  # broken after all: given back below
                log.debug("%s: the writer's connection is broken", self.name)
        self._pool().putconn(connection)  # the pool discards a broken connection and opens a new one
        return None

    async def read(self, query: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._readers, lambda: self._borrowed(query, args,
                                                                                                        kwargs))

    def _borrowed(self, query: Callable[..., T], args: Any, kwargs: Any) -> T:
        with self._pool().connection() as connection:
            self._local.borrowed = connection
            try:
                return query(*args, **kwargs)
            finally:
                self._local.borrowed = None

    def reader(self) -> Connection[Any]:
        refuse_on_the_event_loop(self.name)
        connection: Connection[Any] | None = getattr(self._local, "borrowed", None)
        if connection is None:  # a thread that reads outside read() (e.g. asyncio.to_thread) keeps one
            connection = getattr(self._local, "kept", None)
            if connection is None or connection.broken:
                connection = self._local.kept = self._pool().getconn()
                with self._lock:
                    self._kept.append(connection)
        return connection
