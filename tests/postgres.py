"""A real PostgreSQL (Debian's postgresql package) for the tests: ``initdb`` and ``pg_ctl`` in a temporary
directory, on a free loopback port, its socket in that directory too; one server for a test run, a fresh
database for every test. As root (initdb refuses to run as root) the server runs as the ``postgres`` user."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.helpers import free_port

BIN = Path(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))[-1]).parent if glob.glob(
    "/usr/lib/postgresql/*/bin/initdb") else None
SUPERUSER = "kubmesh"


@dataclass
class PostgresServer:
    port: int
    directory: Path

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    @contextmanager
    def database(self) -> Iterator[str]:
        """A new empty database, dropped afterwards (with the sessions still on it)."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        try:
            yield self.url(name)
        finally:
            with psycopg.connect(self.url(), autocommit=True) as admin:
                admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


def _as_server_user() -> tuple[list[str], int | None]:
    if os.geteuid() != 0:
        return [], None
    return ["runuser", "-u", "postgres", "--"], pwd.getpwnam("postgres").pw_uid


@contextmanager
def postgres_server(fsync: bool = False) -> Iterator[PostgresServer]:
    if BIN is None:
        raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql (scripts/test.sh does)")
    prefix, uid = _as_server_user()
    directory = Path(tempfile.mkdtemp(prefix="kubmesh-pg-"))
    if uid is not None:
        os.chown(directory, uid, -1)
    data, log = directory / "data", directory / "server.log"
    port = free_port()
    try:
        subprocess.run([*prefix, str(BIN / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust",
                        "-E", "UTF8", "--no-sync"], check=True, capture_output=True)
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {directory} -c max_connections=200"
        if not fsync:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        subprocess.run([*prefix, str(BIN / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w",
                        "-t", "60", "start"], check=True, capture_output=True)
        yield PostgresServer(port, directory)
    finally:
        subprocess.run([*prefix, str(BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True)
        shutil.rmtree(directory, ignore_errors=True)
