"""The simulated KUB-1063 as a Modbus device: its registers, what changes them, and the server serving them.

Every request for the unit reaches :meth:`Kub1063Simulator._answer`, which decides alone whether
it is dropped, delayed, refused or answered, and computes the registers at that moment. Requests
for other unit ids go unanswered, as on an RS-485 bus where only the addressed device replies.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.simulator import SimData, SimDevice
from pymodbus.simulator.simutils import DataType

from contract.payloads import format_ts, utc_now
from farm_agent.decode import encode_value
from farm_agent.link import READ_REPLY_OVERHEAD, READ_REQUEST_BYTES, WRITE_FRAME_BYTES, wire_seconds
from farm_agent.profile import AlarmGroupSpec, Profile, load_profile
from farm_agent.simulator.bus import SimulatedBus, SimulatorError
from farm_agent.simulator.climate import Climate

log = logging.getLogger("kubmesh.simulator")

Table = Literal["input", "holding"]
FailKind = Literal["exception", "timeout"]

ANSWERING = range(0x0000, 0x0400)  # outside strict mode, every address here answers
UNITEMISED_INPUTS = range(0x008A, 0x009C)  # air inlets, lighting, timers: documented only as a range
RESET_ALARMS = 0x0020
TIMEZONE = 0x003F
WIRING = range(0x0100, 0x013E)
FIRMWARE_VERSION = 4.01
DEFAULT_TIMEZONE_MIN = 180  # UTC+3, where the controller is sold
ALARM_RELAY = "alarm_relay"  # the profile's label of the digital output that follows active alarms
READ_HOLDING, READ_INPUT, WRITE_SINGLE, WRITE_MULTIPLE = 3, 4, 6, 16
TABLES: dict[int, Table] = {
    READ_HOLDING: "holding", READ_INPUT: "input", WRITE_SINGLE: "holding", WRITE_MULTIPLE: "holding",
}
WRITES = (WRITE_SINGLE, WRITE_MULTIPLE)
MAX_WRITES_KEPT = 10_000


@dataclass(frozen=True)
class FailMode:
    kind: FailKind
    functions: tuple[int, ...]


class Kub1063Simulator:
    """The controller's registers and behaviour; serve it with :meth:`start_tcp` or :meth:`start_serial`."""

    def __init__(
        self,
        profile: Profile | None = None,
        *,
        unit: int = 1,
        seed: int = 0,
        day: int = 1,
        strict: bool = False,
        latency_ms: float = 0.0,
        pace_baud: int | None = None,
        drop_rate: float = 0.0,
        sentinels: dict[str, str] | None = None,
        alarms: Iterable[tuple[str, int]] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 1 <= unit <= 247:
            raise ValueError(f"unit id {unit} is outside 1-247")
        if day < 0:
            raise ValueError("the day of the cycle must not be negative")
        if latency_ms < 0:
            raise ValueError("latency must not be negative")
        if not 0 <= drop_rate <= 1:
            raise ValueError(f"drop rate {drop_rate} is outside 0-1")
        self.profile = profile or load_profile()
        self.unit = unit
        self.strict = strict
        self.latency_s = latency_ms / 1000
        self.pace_baud = pace_baud  # answer as late as the frames would be on a line at this speed (8N1)
        self.drop_rate = drop_rate
        self.clock = clock
        self.climate = Climate(seed, start_day=day, started=clock())
        self._chance = random.Random(seed)  # drops draw apart from the climate, which stays the same either way
        self.sentinels: dict[str, str] = {}
        self.pins: dict[tuple[Table, int], int] = {}
        self.alarm_bits: dict[str, int] = {group.name: 0 for group in self.profile.alarm_groups}
        self.holding: dict[int, int] = _installed_holding()
        self.fail: FailMode | None = None
        self.requests: Counter[int] = Counter()
        self.registers_read = 0
        self.dropped = 0
        self.writes: deque[dict[str, Any]] = deque(maxlen=MAX_WRITES_KEPT)
        self._documented = {
            "input": self._documented_inputs(),
            "holding": {RESET_ALARMS, TIMEZONE, *WIRING, *(w.address for w in self.profile.writable)},
        }
        self._alarm_relay = self._find_alarm_relay()
        self._server: SimulatedBus | None = None
        for name, status in (sentinels or {}).items():
            self.set_sentinel(name, status)
        for group, bit in alarms:
            self.set_alarm(group, bit, True)

    # ---- what tests and the control API change ----------------------------------------------------

    def set_sentinel(self, name: str, status: str | None) -> None:
        """Make value ``name`` read the profile's raw sentinel for ``status`` (``None`` restores the value)."""
        spec = self.profile.values_by_name.get(name)
        if spec is None:
            raise ValueError(f"the profile has no value named {name!r}")
        if status is None:
            self.sentinels.pop(name, None)
            return
        if not spec.sentinels:
            raise ValueError(f"{name} does not carry sensor statuses in the profile")
        self._sentinel_raw(status)
        self.sentinels[name] = status

    def set_alarm(self, group: str, bit: int, on: bool = True) -> None:
        """Raise or clear a bit; raising an active bit also latches it, as the controller does."""
        spec = self._group(group)
        if not 0 <= bit <= 63:
            raise ValueError(f"alarm bit {bit} is outside 0-63")
        targets = [spec]
        if on and not spec.latched:
            targets += [g for g in self.profile.alarm_groups if g.kind == spec.kind and g.latched]
        for target in targets:
            if on:
                self.alarm_bits[target.name] |= 1 << bit
            else:
                self.alarm_bits[target.name] &= ~(1 << bit)

    def pin_raw(self, address: int, value: int | None, table: Table = "input") -> None:
        """Make a register read ``value`` whatever the model says (``None`` unpins)."""
        if table not in ("input", "holding"):
            raise ValueError("the register table is 'input' or 'holding'")
        if not 0 <= address <= 0xFFFF:
            raise ValueError(f"address {address} is outside 0-65535")
        if value is None:
            self.pins.pop((table, address), None)
        elif not 0 <= value <= 0xFFFF:
            raise ValueError(f"raw value {value} is outside 0-65535")
        else:
            self.pins[(table, address)] = value

    def set_fail(self, kind: FailKind | None, function: int | None = None) -> None:
        """Refuse (exception 04) or ignore (timeout) requests of ``function``, by default every write, until reset."""
        if kind not in (None, "exception", "timeout"):
            raise ValueError("the fail mode is 'exception', 'timeout' or null")
        self.fail = FailMode(kind, WRITES if function is None else (function,)) if kind else None

    @property
    def stats(self) -> dict[str, Any]:
        return {
            "requests": sum(self.requests.values()),
            "by_function": {str(code): count for code, count in sorted(self.requests.items())},
            "writes": list(self.writes),
            "registers_read": self.registers_read,
            "dropped": self.dropped,
        }

    # ---- the registers ------------------------------------------------------------------------------

    def read(self, table: Table, address: int, count: int = 1) -> list[int]:
        """Registers as a master would read them now (pins and sentinels applied)."""
        current = self.holding if table == "holding" else self.input_registers()
        return [self.pins.get((table, a), current.get(a, 0)) for a in range(address, address + count)]

    def input_registers(self) -> dict[int, int]:
        """Every documented input register as the controller would report it now (pins aside)."""
        now = self.clock()
        values = self.climate.values(now, _signed(self.holding[TIMEZONE]))
        raw = dict.fromkeys(self._documented["input"], 0)
        for spec in self.profile.values:
            if spec.function == "input" and spec.name in values:
                raw[spec.address] = encode_value(spec, values[spec.name]) & 0xFFFF
        words = self.climate.unitemised(values, now, len(UNITEMISED_INPUTS))
        raw.update(zip(UNITEMISED_INPUTS, words, strict=True))
        for group in self.profile.alarm_groups:
            for index, address in enumerate(group.registers):
                raw[address] = self.alarm_bits[group.name] >> (16 * index) & 0xFFFF
        if self._alarm_relay and self._any_active_alarm():
            address, bit = self._alarm_relay
            raw[address] |= 1 << bit
        for name, status in self.sentinels.items():
            raw[self.profile.values_by_name[name].address] = self._sentinel_raw(status)
        if self.profile.firmware:
            raw[self.profile.firmware.address] = round(FIRMWARE_VERSION / self.profile.firmware.scale)
        return raw

    def answers(self, table: Table, address: int, count: int) -> bool:
        """Whether the device answers a request for these registers (or refuses it with exception 02)."""
        span = range(address, address + count)
        if self.strict:
            return all(a in self._documented[table] for a in span)
        return span.start >= ANSWERING.start and span.stop <= ANSWERING.stop

    def write(self, address: int, values: list[int]) -> None:
        """What a write request does: recorded, stored, and 1 on the reset register clears the latched groups."""
        ts = format_ts(utc_now())
        for target, value in enumerate(values, start=address):
            self.writes.append({"address": target, "value": value, "ts": ts})
            if target == RESET_ALARMS:
                if value == 1:
                    for group in self.profile.alarm_groups:
                        if group.latched:
                            self.alarm_bits[group.name] = 0
                value = 0  # the reset register always reads back 0
            self.holding[target] = value
        log.info("write %s", ", ".join(f"0x{a:04X}={v}" for a, v in enumerate(values, start=address)))

    # ---- serving ------------------------------------------------------------------------------------

    async def start_tcp(self, host: str = "127.0.0.1", port: int = 5020) -> None:
        """Serve this unit alone (a bus of one); :class:`~farm_agent.simulator.bus.SimulatedBus` serves several."""
        await self._bus().start_tcp(host, port)

    async def start_serial(self, device: str, baudrate: int = 9600, parity: str = "N", stopbits: int = 1) -> None:
        await self._bus().start_serial(device, baudrate, parity, stopbits)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()
            self._server = None

    def _bus(self) -> SimulatedBus:
        if self._server is not None:
            raise SimulatorError("the simulator is serving already")
        self._server = SimulatedBus([self])
        return self._server

    def device(self) -> SimDevice:
        """This unit on a pymodbus server: one block over the whole address space, so every request reaches
        :meth:`_answer`."""
        return SimDevice(id=self.unit, simdata=[SimData(0, count=0x10000, datatype=DataType.REGISTERS)],
                         action=self._answer)

    def count(self, function_code: int) -> None:
        self.requests[function_code] += 1

    async def _answer(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if set_values is None and function_code in WRITES:
            return None  # pymodbus reading back a write to echo it: the block holds the written words already
        if self.drop_rate and self._chance.random() < self.drop_rate:
            self.dropped += 1
            raise NoSuchIdException  # with ignore_missing_devices the server sends nothing
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if self.pace_baud:
            await asyncio.sleep(_frames_on_the_wire(function_code, count, self.pace_baud))
        table = TABLES.get(function_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        if not self.answers(table, address, count):
            return ExcCodes.ILLEGAL_ADDRESS
        if self.fail and function_code in self.fail.functions:
            if self.fail.kind == "timeout":
                raise NoSuchIdException
            return ExcCodes.DEVICE_FAILURE
        if set_values is not None:
            self.write(address, [int(v) for v in set_values])
            return None
        offset = address - start_address
        registers[offset:offset + count] = self.read(table, address, count)
        self.registers_read += count
        return None

    # ---- profile lookups ----------------------------------------------------------------------------

    def _documented_inputs(self) -> set[int]:
        addresses = set(self.profile.input_registers()) | set(UNITEMISED_INPUTS)
        if self.profile.firmware and self.profile.firmware.function == "input":
            addresses.add(self.profile.firmware.address)
        return addresses

    def _find_alarm_relay(self) -> tuple[int, int] | None:
        for spec in self.profile.values:
            for bit, label in spec.bits.items():
                if label == ALARM_RELAY:
                    return spec.address, bit
        return None

    def _any_active_alarm(self) -> bool:
        return any(self.alarm_bits[g.name] for g in self.profile.alarm_groups if g.kind == "alarm" and not g.latched)

    def _sentinel_raw(self, status: str) -> int:
        for raw, sentinel_status in self.profile.sentinels.items():
            if sentinel_status == status:
                return raw
        for span in self.profile.sentinel_ranges:
            if span.status == status:
                return span.first
        raise ValueError(f"the profile has no sentinel for status {status!r}")

    def _group(self, name: str) -> AlarmGroupSpec:
        for group in self.profile.alarm_groups:
            if group.name == name:
                return group
        raise ValueError(f"the profile has no alarm group named {name!r}")


def _installed_holding() -> dict[int, int]:
    """Holding registers as an installer leaves them: relays numbered in the order of the wiring table."""
    holding = {RESET_ALARMS: 0, TIMEZONE: DEFAULT_TIMEZONE_MIN}
    holding.update({address: index + 1 if address < 0x0118 else 0 for index, address in enumerate(WIRING)})
    return holding


def _signed(raw: int) -> int:
    return raw - 0x10000 if raw >= 0x8000 else raw


def _frames_on_the_wire(function_code: int, count: int, baudrate: int) -> float:
    """What a request and its reply take on a 8N1 line: a read's reply is 5 + 2·N bytes, a single write's echo 8."""
    if function_code in (READ_HOLDING, READ_INPUT):
        return wire_seconds(READ_REQUEST_BYTES + READ_REPLY_OVERHEAD + 2 * count, 2, baudrate)
    return wire_seconds(2 * WRITE_FRAME_BYTES + (2 * count if function_code == WRITE_MULTIPLE else 0), 2, baudrate)
