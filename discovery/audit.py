"""Plug-in: the audit trail of commands, every ``set/{name}`` sent to a farm paired with its ``ack``."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from contract.payloads import Ack, Clock, PayloadError, decode, decode_set_command, format_ts
from contract.topics import FarmTopic, InvalidTopic, Topics
from discovery.sqlite import connect, upsert

log = logging.getLogger("kubmesh.discovery.audit")

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


class CommandAudit:
    def __init__(self, path: Path, topics: Topics, clock: Clock) -> None:
        self.topics = topics
        self.clock = clock
        self._db = connect(path)
        self._db.execute(SCHEMA)
        self._lock = threading.Lock()

    def subscriptions(self) -> list[str]:
        return [f"{self.topics.base}/farms/+/{FarmTopic.SET.value}/+", self.topics.all_farms(FarmTopic.ACK)]

    async def on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        try:
            parsed = self.topics.parse(topic)
        except InvalidTopic:
            return
        try:
            if parsed.kind is FarmTopic.SET and parsed.name:
                command = decode_set_command(payload)
                self._record(parsed.farm_id, command.id, parsed.name, command.value, sent_ts=format_ts(self.clock()))
            elif parsed.kind is FarmTopic.ACK:
                ack = decode(Ack, payload)
                self._record(parsed.farm_id, ack.id, ack.name, ack.value, ack_ts=format_ts(ack.ts), ok=int(ack.ok),
                             error=ack.error)
        except PayloadError as exc:
            # a malformed command is refused by the agent, whose ack (with the reason) is recorded
            log.info("farm %s: unreadable %s message: %s", parsed.farm_id, parsed.kind.value, exc)

    def _record(self, farm_id: str, command_id: str, name: str, value: Any, **columns: Any) -> None:
        text = None if value is None else str(value)
        with self._lock:
            keys = {"farm_id": farm_id, "id": command_id}
            upsert(self._db, "commands", keys, {"name": name, "value": text, **columns})

    def commands(self, farm_id: str, limit: int = 100) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, name, value, sent_ts, ack_ts, ok, error FROM commands WHERE farm_id = ? "
                "ORDER BY COALESCE(sent_ts, ack_ts) DESC LIMIT ?",
                (farm_id, limit),
            ).fetchall()
        return [
            {"id": r[0], "name": r[1], "value": _number(r[2]), "sent": r[3], "acknowledged": r[4],
             "ok": None if r[5] is None else bool(r[5]), "error": r[6]}
            for r in rows
        ]

    def close(self) -> None:
        self._db.close()


def _number(text: str | None) -> float | int | None:
    if text is None:
        return None
    number = float(text)
    return int(number) if number.is_integer() else number
