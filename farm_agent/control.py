"""Commands from ``set/{name}``: validated against the profile, written once, always acknowledged.

A write to a climate controller in a house full of animals must never be a
guess: only names the profile marks writable, only values within their
limits, never a retained or stale command, never the same command id twice;
settings are read back and compared. Every command gets exactly one ``ack``.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from contract.payloads import Ack, Clock, PayloadError, SetCommand, decode_set_command, format_ts
from contract.topics import VALUE_NAME_PATTERN
from farm_agent.link import ModbusFailure, ModbusLink, ModbusTimeout, Priority
from farm_agent.profile import Profile, WritableSpec

log = logging.getLogger("kubmesh.agent.control")

DEDUP_WINDOW_S = 600.0
_ID_IN_BROKEN_JSON = re.compile(rb'"id"\s*:\s*"([A-Za-z0-9_.:-]{1,128})"')


@dataclass(frozen=True)
class CommandResult:
    ack: Ack
    applied: bool  # a register was written


class CommandRefused(Exception):
    """A command that is not executed; the message is the reason a person reads in the ack."""


class CommandHandler:
    def __init__(
        self,
        profile: Profile,
        link: ModbusLink,
        audit_path: Path,
        clock: Clock,
        max_age_s: float = 60.0,
    ) -> None:
        self.profile = profile
        self.link = link
        self.clock = clock
        self.max_age_s = max_age_s
        self._recent: OrderedDict[str, tuple[float, Ack]] = OrderedDict()
        self._audit = sqlite3.connect(audit_path, isolation_level=None)
        self._audit.execute(
            "CREATE TABLE IF NOT EXISTS commands (id TEXT, name TEXT, value TEXT, ok INTEGER, error TEXT, ts TEXT)"
        )

    async def handle(self, name: str | None, payload: bytes, retained: bool = False) -> CommandResult:
        """Execute one ``set`` message and return the ack to publish."""
        command: SetCommand | None = None
        try:
            command = decode_set_command(payload)
        except PayloadError as exc:
            # keep the sender's id when it can be found, so the refusal can be matched to the request
            found = _ID_IN_BROKEN_JSON.search(payload[:4096])
            command_id = found.group(1).decode() if found else None
            return self._finish(command_id, name or "", None, f"malformed payload: {exc}", applied=False)
        repeated = self._repeated(command.id)
        if repeated is not None:
            return CommandResult(repeated.model_copy(update={"ts": self.clock()}), applied=False)
        try:
            if retained:
                raise CommandRefused("retained commands are refused: publish set messages without the retain flag")
            self._check_age(command)
            spec = self._writable(name or "")
            raw = self._raw_value(spec, command.value)
            await self._write(spec, raw)
        except CommandRefused as exc:
            return self._finish(command.id, name or "", command.value, str(exc), applied=False)
        except ModbusFailure as exc:
            return self._finish(command.id, name or "", command.value, _device_reason(exc), applied=False)
        return self._finish(command.id, name or "", command.value, None, applied=True)

    def _writable(self, name: str) -> WritableSpec:
        spec = self.profile.writable_by_name.get(name)
        if spec is not None:
            return spec
        if name in self.profile.values_by_name:
            raise CommandRefused(f"read-only: {name!r} is a reading and cannot be written")
        raise CommandRefused(f"unknown name {name!r}: writable names are {', '.join(self.profile.writable_by_name)}")

    def _check_age(self, command: SetCommand) -> None:
        if command.ts is None:
            return
        age = (self.clock() - command.ts).total_seconds()
        if age > self.max_age_s:
            raise CommandRefused(f"command too old: issued {age:.0f} s ago, the limit is {self.max_age_s:.0f} s")
        if age < -self.max_age_s:
            raise CommandRefused("command from the future: check the sender's clock")

    @staticmethod
    def _raw_value(spec: WritableSpec, value: float) -> int:
        if spec.kind == "action":
            if value != spec.value:
                raise CommandRefused(f"out of range: {spec.name} accepts only {spec.value}")
            return int(spec.value)
        assert spec.min is not None and spec.max is not None  # the profile model guarantees both
        if not spec.min <= value <= spec.max:
            raise CommandRefused(f"out of range: {spec.name} must be between {spec.min:g} and {spec.max:g}")
        if spec.step and abs(round((value - spec.min) / spec.step) * spec.step - (value - spec.min)) > 1e-6:
            raise CommandRefused(f"out of range: {spec.name} moves in steps of {spec.step:g}")
        raw = round(value / spec.scale)
        if spec.type == "s16":
            return raw & 0xFFFF
        if not 0 <= raw <= 0xFFFF:
            raise CommandRefused(f"out of range: {value:g} does not fit the register")
        return raw

    async def _write(self, spec: WritableSpec, raw: int) -> None:
        await self.link.write(spec.address, raw)
        if spec.kind == "setting":
            (read_back,) = await self.link.read("holding", spec.address, 1, Priority.COMMAND)
            if read_back != raw:
                raise CommandRefused(f"read-back mismatch: wrote {raw}, the device holds {read_back}")

    def _repeated(self, command_id: str) -> Ack | None:
        now = time.monotonic()
        while self._recent and next(iter(self._recent.values()))[0] < now - DEDUP_WINDOW_S:
            self._recent.popitem(last=False)
        seen = self._recent.get(command_id)
        return seen[1] if seen else None

    def _finish(
        self, command_id: str | None, name: str, value: float | None, error: str | None, applied: bool
    ) -> CommandResult:
        ack = Ack(id=command_id or uuid.uuid4().hex, name=name, value=value, ok=error is None, error=error,
                  ts=self.clock())
        if command_id:
            self._recent[command_id] = (time.monotonic(), ack)
        try:
            self._audit.execute(
                "INSERT INTO commands VALUES (?, ?, ?, ?, ?, ?)",
                (ack.id, name, None if value is None else str(value), int(ack.ok), error, format_ts(ack.ts)),
            )
        except sqlite3.Error as exc:  # a full disk: the command is still answered, and the log keeps it
            log.warning("command %s not written to the audit file: %s", ack.id, exc)
        shown = name if VALUE_NAME_PATTERN.fullmatch(name) else repr(name)  # a topic level may hold a line break
        log.log(logging.INFO if ack.ok else logging.WARNING, "command %s %s=%s: %s",
                ack.id or "-", shown, value, "applied" if ack.ok else error)
        return CommandResult(ack, applied)

    def close(self) -> None:
        self._audit.close()


def _device_reason(exc: ModbusFailure) -> str:
    if isinstance(exc, ModbusTimeout):
        return f"timeout: {exc}"
    return f"device error: {exc}"
