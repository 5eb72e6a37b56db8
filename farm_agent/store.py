"""The agent's own SQLite file in its data dir: counters that must survive restarts and SIGKILL."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Once a checkpoint has emptied the write-ahead log, it is cut back to this size: a Raspberry Pi's
# SD card keeps no megabytes of stale log, and a full disk is noticed at the next write, not after
# the log's old length has been written over again.
WAL_SIZE_LIMIT = 64 * 1024


class AgentStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._mark = _open_mark(path.with_suffix(".seq"))
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        self.db.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All or nothing: a reading's number and its place in the queue are committed together.

        A full disk may fail the COMMIT itself, and SQLite may already have rolled back on its own:
        either way the connection is left out of the transaction, ready for the next one.
        """
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise

    def set(self, key: str, value: int) -> None:
        self.db.execute(
            "INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def get(self, key: str) -> int:
        row = self.db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def mark_seq(self, seq: int) -> None:
        """Keep the last number given where a full disk still takes it: 8 bytes written over themselves.

        While SQLite refuses writes this is what stops a restart from giving the same numbers again.
        """
        if self._mark is not None:
            with contextlib.suppress(OSError):  # then the database's own counter is all there is
                os.pwrite(self._mark, seq.to_bytes(8, "big"), 0)

    def marked_seq(self) -> int:
        if self._mark is None:
            return 0
        return int.from_bytes(os.pread(self._mark, 8, 0).ljust(8, b"\0"), "big")

    def close(self) -> None:
        self.db.close()
        if self._mark is not None:
            os.close(self._mark)


def _open_mark(path: Path) -> int | None:
    """The mark's file, its 8 bytes allocated now, while there is room (None when there is none)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return None
    try:
        if os.fstat(fd).st_size < 8:
            os.pwrite(fd, bytes(8), 0)
    except OSError:
        os.close(fd)
        return None
    return fd
