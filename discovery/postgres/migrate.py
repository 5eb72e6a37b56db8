"""Versioned schema migrations, applied at start: ``migrations/NNNN_name.sql``, in order, each once.

Why not yoyo-migrations or Alembic: Alembic wants SQLAlchemy, which nothing else here uses, and
migration scripts in Python; yoyo-migrations guards concurrent runs with a lock row in a table of its
own, which a node killed mid-migration leaves behind until someone breaks it by hand. Here every
migration runs in one transaction (PostgreSQL's DDL is transactional) under a transaction-level advisory
lock, which the server releases with the session, however it ends: two nodes starting at once apply a
migration once, and a node killed half way leaves nothing half done. The whole runner is this file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("kubmesh.discovery.postgres")

MIGRATIONS = Path(__file__).with_name("migrations")
MIGRATION_LOCK = 0x6B75626D6D696772  # "kubmmigr": the advisory lock key the runners queue on


class SchemaError(RuntimeError):
    """The database's schema is not one this version can use."""


def migrations() -> list[tuple[int, Path]]:
    found = sorted((int(path.name[:4]), path) for path in MIGRATIONS.glob("[0-9][0-9][0-9][0-9]_*.sql"))
    versions = [version for version, _ in found]
    if versions != list(range(1, len(versions) + 1)):
        raise SchemaError(f"the migrations in {MIGRATIONS} are not numbered 0001, 0002, ...: {versions}")
    return found


def schema_version(connection: Any) -> int:
    """The highest migration applied (0: none)."""
    exists = connection.execute("SELECT to_regclass('kubmesh_schema')").fetchone()[0]
    if exists is None:
        return 0
    return int(connection.execute("SELECT COALESCE(MAX(version), 0) FROM kubmesh_schema").fetchone()[0])


def migrate(connection: Any) -> list[int]:
    """Apply the migrations the database lacks (an autocommit connection); the versions applied."""
    known = migrations()
    applied: list[int] = []
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        connection.execute("CREATE TABLE IF NOT EXISTS kubmesh_schema (version INTEGER PRIMARY KEY, "
                           "name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
        current = schema_version(connection)
        if current > len(known):
            raise SchemaError(f"the database's schema is version {current}, newer than this kubmesh knows "
                              f"({len(known)}): upgrade kubmesh on this node")
        for version, path in known[current:]:
            connection.execute(path.read_text(encoding="utf-8"))
            connection.execute("INSERT INTO kubmesh_schema (version, name) VALUES (%s, %s)", (version, path.stem))
            applied.append(version)
    for version in applied:
        log.info("database schema: migration %04d applied", version)
    return applied
