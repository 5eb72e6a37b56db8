"""Extension: the audit trail of commands, every ``set/{name}`` sent to a farm paired with its ``ack``, in the
node's storage (SQLite's ``commands.db``)."""

from __future__ import annotations

import math
from typing import Any

from contract.messages import FarmMessage, Message
from contract.payloads import Ack, Clock, SetCommand, format_ts
from contract.topics import FarmTopic, Topics
from discovery.extension import Extension, Node
from discovery.storage import Database, upsert

SCHEMA = """
CREATE TABLE IF NOT EXISTS commands (
    farm_id TEXT NOT NULL,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT,
    sent_ts TEXT,
    ack_ts TEXT,
    ok INTEGER,
    error TEXT,
    PRIMARY KEY (farm_id, id)
)
"""


class CommandAudit(Extension):
    name = "audit"

    def __init__(self, db: Database, topics: Topics, clock: Clock) -> None:
        self.topics = topics
        self.clock = clock
        self.db = db

    @classmethod
    def build(cls, node: Node) -> CommandAudit:
        return cls(node.storage.database("commands.db", SCHEMA), node.topics, node.clock)

    def filters(self) -> list[str]:
        return [f"{self.topics.base}/farms/+/{FarmTopic.SET.value}/+", self.topics.all_farms(FarmTopic.ACK)]

    async def start(self) -> None:
        self.db.open()

    async def stop(self) -> None:
        self.db.close()

    def databases(self) -> list[Database]:
        return [self.db]

    async def on_message(self, message: Message) -> None:
        # a malformed command never gets here: the agent refuses it, and its ack (with the reason) is recorded
        if not isinstance(message, FarmMessage):
            return
        command = message.payload
        if isinstance(command, SetCommand) and message.name:
            self._record(message.farm_id, command.id, message.name, command.value, sent_ts=format_ts(self.clock()))
        elif isinstance(command, Ack):
            self._record(message.farm_id, command.id, command.name, command.value, ack_ts=format_ts(command.ts),
                         ok=int(command.ok), error=command.error)

    def _record(self, farm_id: str, command_id: str, name: str, value: Any, **columns: Any) -> None:
        row = {"name": name, "value": None if value is None else str(value), **columns}
        self.db.submit(lambda db: upsert(db, self.db.mark, "commands", {"farm_id": farm_id, "id": command_id}, row))

    def commands(self, farm_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """The farm's last commands, newest first (blocking: through self.db.read)."""
        mark = self.db.mark
        rows = self.db.reader().execute(
            f"SELECT id, name, value, sent_ts, ack_ts, ok, error FROM commands WHERE farm_id = {mark} "
            f"ORDER BY COALESCE(sent_ts, ack_ts) DESC LIMIT {mark}",
            (farm_id, limit),
        ).fetchall()
        return [
            {"id": r[0], "name": r[1], "value": _number(r[2]), "sent": r[3], "acknowledged": r[4],
             "ok": None if r[5] is None else bool(r[5]), "error": r[6]}
            for r in rows
        ]


def _number(text: str | None) -> float | int | None:
    """The value as sent; an ack may echo anything, and what is not a finite number is shown as none."""
    try:
        number = float(text) if text is not None else math.nan
    except ValueError:
        return None
    if not math.isfinite(number):
        return None
    return int(number) if number.is_integer() else number
