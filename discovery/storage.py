"""The discovery node's storage interface, which SQLite (the embedded default) and PostgreSQL both implement.

A :class:`Storage` is chosen once from the settings (:func:`open_storage`: ``DATABASE_URL`` names a
PostgreSQL server, else SQLite files in the data dir). It hands out one :class:`Database` per store (the
registry, the command audit, the tailnet, whatever else an extension keeps): the same thread model on
both — one writer thread whose jobs run in order, reader threads, nothing blocking on the event loop —
and the same SQL, written with the database's own parameter :attr:`Database.mark`. The history, whose
storage differs most (partitions, batched inserts, rollups), has an interface of its own,
:class:`HistoryStore`. What must run on one node only (retention, the tailnet sync, alert notifications)
asks the storage's :class:`Lease`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, ParamSpec, TypeVar

if TYPE_CHECKING:
    from discovery.settings import DiscoverySettings

T = TypeVar("T")
P = ParamSpec("P")
Job = Callable[[Any], Any]  # given the writer's connection (sqlite3.Connection or psycopg.Connection)
READERS = 2  # reader threads of each store
Pending = tuple[str, int, float, str]  # a reading waiting to be written: farm, seq, ts (epoch s), values as JSON


class OnTheEventLoop(RuntimeError):
    """A blocking database call was made from the event loop's thread."""


def refuse_on_the_event_loop(name: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise OnTheEventLoop(f"{name}: a blocking read on the event loop; use Database.read")


class Database(ABC):
    """One store's tables: writes queued to one writer thread, reads on reader threads (the thread model both
    drivers share; each says how its writer runs the jobs and how its connections are given up)."""

    mark: ClassVar[str]  # the driver's parameter placeholder: "?" (sqlite3) or "%s" (psycopg)

    def __init__(self, name: str, threads: str) -> None:
        self.name = name  # for /health and /metrics (database_write_errors)
        self.write_errors = 0
        self._jobs: queue.SimpleQueue[tuple[Job, concurrent.futures.Future[Any]] | None] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write_loop, name=f"{threads}-writer:{name}", daemon=True)
        self._readers = concurrent.futures.ThreadPoolExecutor(READERS, thread_name_prefix=f"{threads}-reader:{name}")
        self._local = threading.local()
        self._lock = threading.Lock()  # guards the reader connections given out

    @abstractmethod
    def open(self) -> None:
        """Make the tables ready and start the writer (blocking, once, before the node serves)."""

    def close(self) -> None:
        """Finish the writes already given, then give up every connection."""
        if self._writer.is_alive():
            self._jobs.put(None)
            self._writer.join()
        self._readers.shutdown(wait=True)
        with self._lock:
            self._release_readers()

    @abstractmethod
    def _write_loop(self) -> None:
        """The writer thread: the queued jobs in order until ``None``, then its connection given up."""

    @abstractmethod
    def _release_readers(self) -> None:
        """Close (or give back) the reader connections, under ``_lock``."""

    def submit(self, job: Job) -> concurrent.futures.Future[Any]:
        """Queue a write; it runs on the writer thread, after every write queued before it."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._jobs.put((job, future))
        return future

    async def write(self, job: Callable[[Any], T]) -> T:
        """Queue a write and wait (without blocking the loop) until it is committed."""
        result: T = await asyncio.wrap_future(self.submit(job))
        return result

    @abstractmethod
    async def read(self, query: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run the blocking ``query(*args)`` on a reader thread."""

    @abstractmethod
    def reader(self) -> Any:
        """This thread's read connection (rows indexable by position and by column name); refused on the event
        loop's thread."""


@contextmanager
def transaction(db: Any) -> Iterator[None]:
    """One transaction on a writer's connection, whichever the driver: psycopg's own (a savepoint within the
    writer's batch), or BEGIN and COMMIT on sqlite3's autocommit connection."""
    if hasattr(db, "transaction"):
        with db.transaction():
            yield
        return
    db.execute("BEGIN")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def upsert(db: Any, mark: str, table: str, keys: dict[str, Any], columns: dict[str, Any]) -> None:
    """Insert a row, or update the given columns of the row with these keys (names are ours, never input).

    The statement is the same in SQLite and PostgreSQL; only the parameter mark differs."""
    names = [*keys, *columns]
    updates = ", ".join(f"{name} = excluded.{name}" for name in columns)
    db.execute(
        f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join([mark] * len(names))}) "
        f"ON CONFLICT({', '.join(keys)}) DO UPDATE SET {updates}",
        [*keys.values(), *columns.values()],
    )


class Lease(ABC):
    """Whether this node runs the duties that must run on one node at a time."""

    @property
    @abstractmethod
    def held(self) -> bool: ...

    @abstractmethod
    async def run(self, stop: asyncio.Event) -> None:
        """Take the lease whenever it is free, keep it while this node lives, until ``stop``."""

    def health(self) -> dict[str, Any]:
        return {"held": self.held}


class SoleNode(Lease):
    """One node per SQLite file: it always holds the lease."""

    @property
    def held(self) -> bool:
        return True

    async def run(self, stop: asyncio.Event) -> None:
        await stop.wait()


MARK_WALK = 1000  # stored seq numbers read at a time while a committed mark is moved


@dataclass(frozen=True)
class Written:
    """What one :meth:`HistoryStore.insert` did."""

    inserted: int  # readings new to the store
    marks: dict[str, int] = field(default_factory=dict)  # the committed mark of every farm it touched, after it
    repeated: set[str] = field(default_factory=set)  # farms that sent again a reading their mark covered


def advance(db: Any, mark: str, farm_id: str, seq: int) -> int:
    """The committed mark ``seq`` moved up over every stored reading that follows it without a gap (on a
    writer's connection, in the transaction of the inserts; read a chunk at a time: a gap ends the walk)."""
    while True:
        rows = db.execute(f"SELECT DISTINCT seq FROM readings WHERE farm_id = {mark} AND seq > {mark} "
                          f"ORDER BY seq LIMIT {MARK_WALK}", (farm_id, seq)).fetchall()
        for (stored,) in rows:
            if stored != seq + 1:
                return seq
            seq = int(stored)
        if len(rows) < MARK_WALK:
            return seq


def held_mark(mark: int, held_from: Mapping[str, int], farm_id: str) -> int:
    """Where a farm's mark starts its walk: below ``held_from`` the farm holds nothing, so nothing is awaited."""
    return max(mark, held_from.get(farm_id, 0) - 1)


class HistoryStore(ABC):
    """Where the history's readings and rollups live; see :mod:`discovery.history` for what they mean."""

    db: Database

    @abstractmethod
    async def insert(self, pending: Sequence[Pending], now: datetime,
                     held_from: Mapping[str, int] | None = None) -> Written:
        """Store the readings in one transaction, each (farm, seq) once, and in the same transaction move the
        committed mark of every farm they (or ``held_from``: per farm, the oldest seq it still holds) name."""

    @abstractmethod
    def marks(self) -> dict[str, int]:
        """Every farm's committed mark (blocking: through ``db.read``)."""

    @abstractmethod
    async def gaps(self, farm_id: str) -> dict[str, Any]:
        """The farm's stored seq numbers summarised (``discovery.gaps.SeqRuns.report``)."""

    @abstractmethod
    async def fold(self, step: float, cutoff: float, expiry: float) -> tuple[int, int]:
        """Raw readings older than ``cutoff`` folded into ``step`` rollups and removed, rollups older than
        ``expiry`` removed: how many of each."""

    @abstractmethod
    def count(self) -> int:
        """Raw readings stored (blocking: through ``db.read``)."""

    @abstractmethod
    def points(self, farm_id: str, name: str, start: float, end: float) -> tuple[list[Any], list[Any]]:
        """The value's raw ``(ts, value)`` and rollup ``(ts, min, max, avg, count)`` rows between ``start`` and
        ``end``, by time (blocking: through ``db.read``)."""

    @abstractmethod
    def seqs(self, farm_id: str) -> list[int]:
        """Every stored seq of the farm (blocking: for tests and checks)."""

    def open(self) -> None:
        self.db.open()

    def close(self) -> None:
        self.db.close()


class Storage(ABC):
    kind: ClassVar[str]

    @abstractmethod
    def open(self, migrate: bool = True) -> None:
        """Connect and (``migrate``) bring the schema up to date (blocking, once, before the node serves); a command
        that only reads opens it without migrating and asks :meth:`has` first."""

    @abstractmethod
    def has(self, file_name: str) -> bool:
        """Whether the store exists yet (SQLite: its file; PostgreSQL: the schema migrated), so that a command that
        only reads makes nothing."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def database(self, file_name: str, schema: str) -> Database:
        """The store that SQLite keeps in ``file_name`` with ``schema`` (PostgreSQL: in its migrated schema)."""

    @abstractmethod
    def history(self, raw_days: float = 30.0) -> HistoryStore:
        """The history's store; PostgreSQL makes a partition for each day of the last ``raw_days``."""

    @abstractmethod
    def lease(self, interval_s: float) -> Lease: ...

    @abstractmethod
    def check(self) -> str:
        """A blocking round trip to the database: what it is, or raises."""

    def describe(self) -> str:
        return self.kind


@contextmanager
def opened_storage(settings: DiscoverySettings, migrate: bool = True) -> Iterator[Storage]:
    """The storage the settings name, for a command line: opened, and closed after."""
    storage = open_storage(settings)
    storage.open(migrate)
    try:
        yield storage
    finally:
        storage.close()


@contextmanager
def opened_database(storage: Storage, file_name: str, schema: str) -> Iterator[Database]:
    """One store of an opened storage, for a command line: its writer started, and stopped after."""
    db = storage.database(file_name, schema)
    db.open()
    try:
        yield db
    finally:
        db.close()


def open_storage(settings: DiscoverySettings) -> Storage:
    """The storage the settings name (not yet opened): PostgreSQL for a ``postgresql://`` DATABASE_URL."""
    if settings.database_url:
        from discovery.postgres.storage import PostgresStorage  # psycopg is the optional extra "postgres"

        return PostgresStorage(settings.database_url)
    from discovery.sqlite import SqliteStorage

    return SqliteStorage(settings.database)
