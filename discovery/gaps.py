"""A farm's stored ``seq`` numbers summarised, kept up to date by the history's writes and retention instead
of counted again for every farm page: how many, the first and the last, and the runs of consecutive numbers."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any


@dataclass
class SeqRuns:
    count: int = 0
    first: int | None = None
    last: int | None = None
    runs: int = 0  # runs of consecutive seq numbers; a gap lies between two of them

    @classmethod
    def counted(cls, db: sqlite3.Connection, farm_id: str) -> SeqRuns:
        """The farm's summary counted from the table (once per farm; a scan of its readings)."""
        count, first, last = db.execute(
            "SELECT COUNT(*), MIN(seq), MAX(seq) FROM readings WHERE farm_id = ?", (farm_id,)).fetchone()
        # a run begins at every stored seq whose predecessor is missing
        runs = db.execute(
            "SELECT COUNT(*) FROM readings AS r WHERE farm_id = ? AND NOT EXISTS "
            "(SELECT 1 FROM readings WHERE farm_id = r.farm_id AND seq = r.seq - 1)", (farm_id,)).fetchone()[0]
        return cls(count, first, last, runs)

    def added(self, db: sqlite3.Connection, farm_id: str, seq: int) -> None:
        """``seq`` was just stored: it starts a run, extends one, or joins two."""
        below, above = self._neighbours(db, farm_id, seq)
        self.count += 1
        self.first = seq if self.first is None else min(self.first, seq)
        self.last = seq if self.last is None else max(self.last, seq)
        self.runs += 1 - below - above

    def removed(self, db: sqlite3.Connection, farm_id: str, seq: int) -> None:
        """Delete the stored ``seq``: it ended a run, shortened one, or split one in two."""
        db.execute("DELETE FROM readings WHERE farm_id = ? AND seq = ?", (farm_id, seq))
        below, above = self._neighbours(db, farm_id, seq)
        self.count -= 1
        self.runs -= 1 - below - above
        if seq in (self.first, self.last):
            self.first, self.last = db.execute(
                "SELECT MIN(seq), MAX(seq) FROM readings WHERE farm_id = ?", (farm_id,)).fetchone()

    @staticmethod
    def _neighbours(db: sqlite3.Connection, farm_id: str, seq: int) -> tuple[int, int]:
        """Whether ``seq - 1`` and ``seq + 1`` are stored (1) or not (0)."""
        below, above = (db.execute("SELECT EXISTS (SELECT 1 FROM readings WHERE farm_id = ? AND seq = ?)",
                                   (farm_id, neighbour)).fetchone()[0] for neighbour in (seq - 1, seq + 1))
        return below, above

    def report(self) -> dict[str, Any]:
        """How many readings are stored, and how many ``seq`` numbers are missing between them (and where)."""
        missing = self.last - self.first + 1 - self.count if self.first is not None and self.last is not None else 0
        return {"readings": self.count, "first_seq": self.first, "last_seq": self.last,
                "gaps": max(self.runs - 1, 0), "missing": missing}
