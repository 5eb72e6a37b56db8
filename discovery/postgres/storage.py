"""The storage of every node of a site on one PostgreSQL server (``DATABASE_URL=postgresql://...``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from discovery.postgres.database import PostgresDatabase, rows
from discovery.postgres.history import PostgresHistory
from discovery.postgres.lease import KEEPALIVE, AdvisoryLease
from discovery.postgres.migrate import SchemaError, migrations, schema_version
from discovery.postgres.migrate import migrate as apply_migrations
from discovery.storage import Lease, Storage

POOL_MAX = 16  # the stores' writers and readers (2 each), and the threads that read outside them
CONNECT_TIMEOUT_S = 15.0


def redacted(url: str) -> str:
    """The URL without its password, for logs and /health."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    user, host, port, name = (info.get(key, "") for key in ("user", "host", "port", "dbname"))
    return f"postgresql://{user}@{host}:{port or 5432}/{name}"


class PostgresStorage(Storage):
    kind = "postgresql"

    def __init__(self, url: str) -> None:
        self.url = url
        self._pool: ConnectionPool[Any] | None = None

    def open(self, migrate: bool = True) -> None:
        pool: ConnectionPool[Any] = ConnectionPool(
            self.url, min_size=2, max_size=POOL_MAX, open=False, name="kubmesh",
            kwargs={"autocommit": True, "row_factory": rows, "application_name": "kubmesh-discovery", **KEEPALIVE})
        pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        try:
            with pool.connection() as connection:
                if migrate:
                    apply_migrations(connection)
        except BaseException:
            pool.close()
            raise
        self._pool = pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def pool(self) -> ConnectionPool[Any]:
        if self._pool is None:
            raise RuntimeError("the PostgreSQL storage is not open")
        return self._pool

    def has(self, file_name: str) -> bool:
        """Every store's tables come with the migrations: whether they have all been applied."""
        with self.pool().connection() as connection:
            return schema_version(connection) >= len(migrations())

    def database(self, file_name: str, schema: str) -> PostgresDatabase:
        return PostgresDatabase(Path(file_name).stem, self.pool)

    def history(self, raw_days: float = 30.0) -> PostgresHistory:
        return PostgresHistory(PostgresDatabase("history", self.pool), raw_days)

    def lease(self, interval_s: float) -> Lease:
        return AdvisoryLease(self.url, interval_s)

    def check(self) -> str:
        with psycopg.connect(self.url, connect_timeout=5) as connection:
            version = connection.execute("SHOW server_version").fetchone()
            schema = schema_version(connection)
        known = len(migrations())
        if schema > known:
            raise SchemaError(f"the schema is version {schema}, newer than this kubmesh knows ({known})")
        state = "up to date" if schema == known else f"version {schema} of {known}, migrated when the node starts"
        return f"postgresql {version[0] if version else '?'} at {redacted(self.url)}, schema {state}"

    def describe(self) -> str:
        return f"postgresql ({redacted(self.url)})"
