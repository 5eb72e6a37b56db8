"""One poll of the controller: the planned block reads, decoded through the device profile.

The plan starts as the fewest blocks the protocol allows. Whether the device
answers a block that spans undocumented addresses is not known, so a block
refused with exception 02 (illegal data address) is split at its widest gap
and each part tried again, until every wanted register is covered or known
to be refused on its own. The plan that works is kept in the data dir, so
later polls and restarts pay nothing for the discovery.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from contract.payloads import AlarmItem, SensorStatus
from farm_agent.blocks import Block, plan_blocks
from farm_agent.decode import decode_alarms, decode_firmware, decode_values
from farm_agent.link import ILLEGAL_DATA_ADDRESS, ModbusDeviceError, ModbusLink
from farm_agent.profile import Profile

log = logging.getLogger("kubmesh.agent.poller")


@dataclass(frozen=True)
class PollResult:
    values: dict[str, int | float | None]
    status: dict[str, SensorStatus]
    alarms: dict[str, list[AlarmItem]]
    registers: dict[int, int]


SETTINGS_INTERVAL_S = 60.0


class Poller:
    def __init__(self, profile: Profile, link: ModbusLink, plan_file: Path | None = None,
                 settings_interval_s: float = SETTINGS_INTERVAL_S) -> None:
        self.profile = profile
        self.link = link
        self.wanted = profile.input_registers()
        # settings read back each poll: one request per run of neighbours, never across the wiring configuration
        self.holding_plan = plan_blocks(profile.holding_registers(), max_gap=0)
        # settings change rarely (a command, the device's own panel): read at the start, after every command
        # and once a settings interval, not every poll, which would cost a request per poll on a 9600-baud line
        self.settings_interval_s = settings_interval_s
        self._settings_read_at: float | None = None
        self._holding: dict[int, int] = {}
        self._refused_holding: set[int] = set()
        self.plan_file = plan_file
        self._fingerprint = _fingerprint(self.wanted, str(link.url))
        self.plan: list[Block] = self._load_plan() or plan_blocks(self.wanted)
        self.refused: set[int] = set()  # wanted registers the device refuses even alone

    async def read_firmware(self) -> str | None:
        spec = self.profile.firmware
        if spec is None:
            return None
        (raw,) = await self.link.read(spec.function, spec.address, 1)
        return decode_firmware(raw, spec.scale)

    async def poll(self) -> PollResult:
        registers: dict[int, int] = {}
        plan: list[Block] = []
        changed = False
        for block in self.plan:
            try:
                words = await self.link.read("input", block.start, block.count)
            except ModbusDeviceError as exc:
                if exc.code != ILLEGAL_DATA_ADDRESS:
                    raise
                changed = True
                plan.extend(await self._split_and_read(block, registers))
                continue
            registers.update(zip(range(block.start, block.end), words, strict=True))
            plan.append(block)
        if changed:
            self.plan = plan
            self._save_plan()
            log.info("read plan settled: %s (%d requests per poll)", ", ".join(map(str, plan)), len(plan))
        if self._settings_due():
            self._holding, self._refused_holding = await self._read_holding()
            self._settings_read_at = time.monotonic()
        values, status = decode_values(self.profile, registers, self._holding)
        for spec in self.profile.values:
            refused = self._refused_holding if spec.function == "holding" else self.refused
            if spec.address in refused:
                values[spec.name], status[spec.name] = None, "error"
        return PollResult(values, status, decode_alarms(self.profile, registers), registers)

    def refresh_settings(self) -> None:
        """Read the settings again at the next poll (a command was written)."""
        self._settings_read_at = None

    def _settings_due(self) -> bool:
        return bool(self.holding_plan) and (self._settings_read_at is None
                                            or time.monotonic() - self._settings_read_at >= self.settings_interval_s)

    async def _read_holding(self) -> tuple[dict[int, int], set[int]]:
        """The holding registers of the profile's values; those the device refuses read as errors."""
        holding: dict[int, int] = {}
        refused: set[int] = set()
        for block in self.holding_plan:
            try:
                words = await self.link.read("holding", block.start, block.count)
            except ModbusDeviceError as exc:
                if exc.code != ILLEGAL_DATA_ADDRESS:
                    raise
                refused.update(range(block.start, block.end))
                continue
            holding.update(zip(range(block.start, block.end), words, strict=True))
        return holding, refused

    async def _split_and_read(self, block: Block, registers: dict[int, int]) -> list[Block]:
        """Read the wanted registers of a refused block in smaller blocks; return the blocks that worked."""
        wanted = [a for a in self.wanted if block.start <= a < block.end]
        if len(wanted) <= 1 or block.count == 1:
            self.refused.update(wanted)
            log.warning("device refuses register(s) %s", ", ".join(f"0x{a:04X}" for a in wanted))
            return []
        working: list[Block] = []
        for part in _split_at_widest_gap(wanted):
            sub = Block(part[0], part[-1] - part[0] + 1)
            try:
                words = await self.link.read("input", sub.start, sub.count)
            except ModbusDeviceError as exc:
                if exc.code != ILLEGAL_DATA_ADDRESS:
                    raise
                working.extend(await self._split_and_read(sub, registers))
                continue
            registers.update(zip(range(sub.start, sub.end), words, strict=True))
            working.append(sub)
        return working

    def _load_plan(self) -> list[Block] | None:
        if self.plan_file is None or not self.plan_file.exists():
            return None
        try:
            data = json.loads(self.plan_file.read_text())
            if data.get("fingerprint") != self._fingerprint:
                return None
            blocks = [Block(int(start), int(count)) for start, count in data["blocks"]]
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring unreadable read plan %s", self.plan_file)
            return None
        covered = {a for b in blocks for a in range(b.start, b.end)}
        return blocks if covered >= set(self.wanted) and all(b.count <= 125 for b in blocks) else None

    def _save_plan(self) -> None:
        if self.plan_file is None:
            return
        document = {"fingerprint": self._fingerprint, "blocks": [[b.start, b.count] for b in self.plan]}
        tmp = self.plan_file.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(document))
            tmp.replace(self.plan_file)
        except OSError as exc:  # a full disk: the plan works from memory, and is found again after a restart
            log.warning("cannot keep the read plan in %s: %s", self.plan_file, exc.strerror or exc)

    def close(self) -> None:
        self.link.close()


def _split_at_widest_gap(addresses: list[int]) -> list[list[int]]:
    gaps = [(addresses[i + 1] - addresses[i], i) for i in range(len(addresses) - 1)]
    widest, index = max(gaps)
    if widest <= 1:  # contiguous: halve it
        index = len(addresses) // 2 - 1
    return [addresses[: index + 1], addresses[index + 1 :]]


def _fingerprint(wanted: list[int], device: str) -> str:
    """A plan is valid for one set of registers on one device."""
    return hashlib.sha256(json.dumps([wanted, device]).encode()).hexdigest()[:16]
