"""``kubmesh simulate``: a KUB-1063 as a real Modbus server (TCP, or RTU on a serial port).

Registers, scales and sentinels come from the device profile. Values drift
plausibly on every read: a day/night swing of the inside temperature around
its target, ventilation following the temperature, humidity, CO2, NH3 and
pressure moving with it. Writing 1 to 0x0020 clears the latched alarm and
warning groups, as the controller does.

For tests and demos it can refuse undocumented addresses (``--strict``),
inject sensor sentinels and alarm bits, delay or drop replies, and it offers
a small HTTP control API (``--control-port``) to do the same while running.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import SimData, SimDevice
from pymodbus.simulator.simutils import DataType

from broker.payloads import format_ts, utc_now
from farm_agent.decode import encode_value
from farm_agent.profile import AlarmGroupSpec, Profile, load_profile
from kubmesh.logs import setup_logging
from kubmesh.runtime import run_until_signalled

log = logging.getLogger("kubmesh.simulator")

REGISTER_SPACE = 0x0400
FIRMWARE_RAW = 401
RESET_ALARMS = 0x0020
TIMEZONE = 0x003F
UNITEMISED_INPUTS = range(0x008A, 0x009C)  # air inlets, lighting, timers: documented only as a range
WIRING_HOLDING = range(0x0100, 0x013E)
READ_INPUT, READ_HOLDING, WRITE_SINGLE, WRITE_MULTIPLE = 4, 3, 6, 16
HOLDING_FUNCTIONS = (READ_HOLDING, WRITE_SINGLE, WRITE_MULTIPLE)


@dataclass
class FailMode:
    mode: str  # "exception" or "timeout"
    function: int | None = None  # only requests with this function code fail; None = all


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
        drop_rate: float = 0.0,
        sentinels: dict[str, str] | None = None,
        alarms: list[tuple[str, int]] | None = None,
    ) -> None:
        self.profile = profile or load_profile()
        self.unit = unit
        self.strict = strict
        self.latency_s = latency_ms / 1000
        self.drop_rate = drop_rate
        self.start_day = day
        self._random = random.Random(seed)
        self._phase = self._random.uniform(0, 2 * math.pi)
        self._started = time.monotonic()
        self._walk = 0.0  # the random part of the inside temperature
        self._level = 30.0  # actual ventilation level, lagging behind its target
        self.sentinels: dict[str, str] = dict(sentinels or {})
        self.pins: dict[tuple[str, int], int] = {}
        self.alarm_bits: dict[str, int] = {group.name: 0 for group in self.profile.alarm_groups}
        self.holding: dict[int, int] = {RESET_ALARMS: 0, TIMEZONE: 180}
        self.holding.update({address: 0 for address in WIRING_HOLDING})
        self.fail: FailMode | None = None
        self.requests: Counter[int] = Counter()
        self.registers_read = 0
        self.writes: list[dict[str, Any]] = []
        self._input_addresses = self._documented_inputs()
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        for group, bit in alarms or []:
            self.set_alarm(group, bit, True)

    # ---- control -----------------------------------------------------------------------------------

    def set_sentinel(self, name: str, status: str | None) -> None:
        if name not in self.profile.values_by_name:
            raise KeyError(f"no value named {name!r}")
        if status is None:
            self.sentinels.pop(name, None)
        else:
            self._sentinel_raw(status)
            self.sentinels[name] = status

    def set_alarm(self, group: str, bit: int, on: bool) -> None:
        """Raise or clear a bit; raising an active bit also latches it, as the controller does."""
        spec = self._group(group)
        if not 0 <= bit <= 63:
            raise ValueError("bit must be 0-63")
        groups = [spec]
        if on and not spec.latched:
            groups += [g for g in self.profile.alarm_groups if g.kind == spec.kind and g.latched]
        for target in groups:
            if on:
                self.alarm_bits[target.name] |= 1 << bit
            else:
                self.alarm_bits[target.name] &= ~(1 << bit)

    def pin_raw(self, address: int, value: int | None, function: str = "input") -> None:
        """Make a register read ``value`` whatever the model says (``None`` unpins)."""
        if value is None:
            self.pins.pop((function, address), None)
        elif not 0 <= value <= 0xFFFF:
            raise ValueError("a register holds 0-65535")
        else:
            self.pins[(function, address)] = value

    def set_fail(self, mode: str | None, function: int | None = None) -> None:
        if mode not in (None, "exception", "timeout"):
            raise ValueError("mode is 'exception', 'timeout' or null")
        self.fail = FailMode(mode, function) if mode else None

    @property
    def stats(self) -> dict[str, Any]:
        return {
            "requests": sum(self.requests.values()),
            "by_function": {str(code): count for code, count in sorted(self.requests.items())},
            "writes": list(self.writes),
            "registers_read": self.registers_read,
        }

    # ---- serving -----------------------------------------------------------------------------------

    def device(self) -> SimDevice:
        space = SimData(0, values=[0] * REGISTER_SPACE, datatype=DataType.REGISTERS)
        return SimDevice(id=self.unit, simdata=[space], action=self._on_request)

    async def start_tcp(self, host: str = "127.0.0.1", port: int = 5020) -> None:
        self._server = ModbusTcpServer(self.device(), address=(host, port), ignore_missing_devices=True)
        await self._server.serve_forever(background=True)

    async def start_serial(self, device: str, baudrate: int = 9600, parity: str = "N", stopbits: int = 1) -> None:
        self._server = ModbusSerialServer(
            self.device(), framer=FramerType.RTU, port=device, baudrate=baudrate, bytesize=8,
            parity=parity, stopbits=stopbits, ignore_missing_devices=True,
        )
        await self._server.serve_forever(background=True)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()
            self._server = None

    async def _on_request(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        self.requests[function_code] += 1
        if self.drop_rate and self._random.random() < self.drop_rate:
            raise NoSuchIdException  # with ignore_missing_devices the server sends nothing
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if self.fail and self.fail.function in (None, function_code):
            if self.fail.mode == "timeout":
                raise NoSuchIdException
            return ExcCodes.DEVICE_FAILURE
        span = range(address, address + count)
        if self.strict and not self._documented(function_code, span):
            return ExcCodes.ILLEGAL_ADDRESS
        if set_values is not None:
            self._write(address, [int(v) for v in set_values])
            return None
        self.registers_read += count
        function = "holding" if function_code in HOLDING_FUNCTIONS else "input"
        current = self.holding_snapshot() if function == "holding" else self.input_snapshot()
        for offset in span:
            registers[offset - start_address] = self.pins.get((function, offset), current.get(offset, 0))
        return None

    def _write(self, address: int, values: list[int]) -> None:
        ts = format_ts(utc_now())
        for index, value in enumerate(values):
            target = address + index
            self.writes.append({"address": target, "value": value, "ts": ts})
            if target == RESET_ALARMS and value == 1:
                for group in self.profile.alarm_groups:
                    if group.latched:
                        self.alarm_bits[group.name] = 0
                value = 0  # the reset register reads back 0
            self.holding[target] = value
        log.info("write %s", ", ".join(f"0x{address + i:04X}={v}" for i, v in enumerate(values)))

    def _documented(self, function_code: int, span: range) -> bool:
        if function_code in HOLDING_FUNCTIONS:
            return all(address in self.holding for address in span)
        return all(address in self._input_addresses for address in span)

    def _documented_inputs(self) -> set[int]:
        addresses = set(self.profile.input_registers()) | set(UNITEMISED_INPUTS)
        if self.profile.firmware:
            addresses.add(self.profile.firmware.address)
        return addresses

    # ---- the climate model -------------------------------------------------------------------------

    def input_snapshot(self) -> dict[int, int]:
        """Every input register as the controller would report it now."""
        values = self._model()
        raw: dict[int, int] = {address: 0 for address in self._input_addresses}
        for name, value in values.items():
            spec = self.profile.values_by_name.get(name)
            if spec is not None:
                raw[spec.address] = encode_value(spec, value) & 0xFFFF
        for name, status in self.sentinels.items():
            raw[self.profile.values_by_name[name].address] = self._sentinel_raw(status)
        for group in self.profile.alarm_groups:
            bits = self.alarm_bits[group.name]
            for index, address in enumerate(group.registers):
                raw[address] = bits >> (16 * index) & 0xFFFF
        for index, address in enumerate(UNITEMISED_INPUTS):
            raw[address] = int(values["ventilation_level"] * (index % 4 + 1) / 4)  # inlets open with ventilation
        if self.profile.firmware:
            raw[self.profile.firmware.address] = FIRMWARE_RAW
        if any(self.alarm_bits[g.name] for g in self.profile.alarm_groups if g.kind == "alarm" and not g.latched):
            raw[self.profile.values_by_name["digital_outputs_2"].address] |= 1 << 7  # the alarm relay
        return raw

    def holding_snapshot(self) -> dict[int, int]:
        return dict(self.holding)

    def _model(self) -> dict[str, float]:
        elapsed = time.monotonic() - self._started
        hour = (time.time() / 3600 + self.holding.get(TIMEZONE, 0) / 60) % 24
        day = self.start_day + int(elapsed // 86400)
        target = round(max(18.0, 33.0 - 0.3 * day), 1)  # chicks need warmth; the target falls as they grow
        vent_start = target + 1.0
        self._walk = 0.9 * self._walk + self._random.gauss(0, 0.12)
        inside = target + 1.8 * math.sin(2 * math.pi * (hour - 9) / 24 + self._phase / 6) + self._walk
        vent_target = min(100.0, max(10.0, 20 + 30 * (inside - vent_start)))
        self._level += 0.3 * (vent_target - self._level)
        level = self._level
        tunnel = inside > target + 3
        groups_on = int(level // 25)
        return {
            "temp_target": target,
            "temp_inside": round(inside, 1),
            "temp_vent_activation": vent_start,
            "ventilation_target": round(vent_target),
            "ventilation_level": round(level),
            "ventilation_scheme": 1 if tunnel else 0,
            "fan_output_base": 100 if tunnel else round(level),
            "fan_output_tunnel": round(level) if tunnel else 0,
            "damper_output": round(level / 2),
            "humidity": round(65 + 7 * math.sin(2 * math.pi * hour / 24) - 0.1 * level + self._noise(0.4), 1),
            "co2": round(min(2500, max(800, 2400 - 16 * level + self._noise(30)))),
            "nh3": round(max(0.0, 8 + 6 * (1 - level / 100) + self._noise(0.3)), 1),
            "pressure": round(10 + 0.2 * level + self._noise(0.3), 1),
            "day_counter": day,
            "digital_outputs_1": (1 << groups_on) - 1,
            "digital_outputs_2": 0b1 if tunnel else 0,
            "digital_outputs_3": 0b1 if 6 <= hour < 22 else 0,  # lighting
        }

    def _noise(self, scale: float) -> float:
        return self._random.gauss(0, scale)

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
        raise KeyError(f"no alarm group named {name!r}")


# ---- control API ---------------------------------------------------------------------------------------

SIM_KEY = web.AppKey("simulator", Kub1063Simulator)


def create_control_api(simulator: Kub1063Simulator) -> web.Application:
    app = web.Application(middlewares=[_errors_as_json])
    app[SIM_KEY] = simulator
    app.router.add_get("/stats", _stats)
    app.router.add_post("/sentinel", _sentinel)
    app.router.add_post("/alarm", _alarm)
    app.router.add_post("/raw", _raw)
    app.router.add_post("/fail", _fail)
    return app


@web.middleware
async def _errors_as_json(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except (KeyError, ValueError, TypeError) as exc:
        return web.json_response({"error": str(exc).strip("'\"")}, status=400)


async def _stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIM_KEY].stats)


async def _body(request: web.Request) -> dict[str, Any]:
    body = await request.json()
    if not isinstance(body, dict):
        raise ValueError("expected a JSON object")
    return body


async def _sentinel(request: web.Request) -> web.Response:
    body = await _body(request)
    request.app[SIM_KEY].set_sentinel(str(body["name"]), body.get("status"))
    return web.json_response({"ok": True})


async def _alarm(request: web.Request) -> web.Response:
    body = await _body(request)
    request.app[SIM_KEY].set_alarm(str(body["group"]), int(body["bit"]), bool(body.get("on", True)))
    return web.json_response({"ok": True})


async def _raw(request: web.Request) -> web.Response:
    body = await _body(request)
    function = body.get("function", "input")
    if function not in ("input", "holding"):
        raise ValueError("function is 'input' or 'holding'")
    value = body.get("value")
    request.app[SIM_KEY].pin_raw(int(body["address"]), None if value is None else int(value), function)
    return web.json_response({"ok": True})


async def _fail(request: web.Request) -> web.Response:
    body = await _body(request)
    function = body.get("function")
    request.app[SIM_KEY].set_fail(body.get("mode"), None if function is None else int(function))
    return web.json_response({"ok": True})


# ---- command line ------------------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("simulate", help="run a simulated KUB-1063 (Modbus TCP or RTU)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5020, help="Modbus TCP port (default 5020)")
    parser.add_argument("--unit", type=int, default=1, help="Modbus unit id (default 1)")
    parser.add_argument("--profile", help="device profile: a shipped name or a YAML file")
    parser.add_argument("--seed", type=int, default=0, help="random seed, for repeatable values")
    parser.add_argument("--day", type=int, default=1, help="day of the growing cycle to start at")
    parser.add_argument("--strict", action="store_true",
                        help="answer exception 02 for requests that touch undocumented addresses")
    parser.add_argument("--sentinel", action="append", default=[], metavar="NAME=STATUS",
                        help="make a value read a sensor status (pending, break, error, disabled)")
    parser.add_argument("--alarm", action="append", default=[], metavar="GROUP:BIT",
                        help="raise an alarm bit, e.g. active_alarms:3")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay every reply")
    parser.add_argument("--drop-rate", type=float, default=0.0, help="fraction of requests left unanswered")
    parser.add_argument("--serial", metavar="DEVICE", help="serve Modbus RTU on this serial device instead of TCP")
    parser.add_argument("--baudrate", type=int, default=9600)
    parser.add_argument("--parity", default="N", choices=["N", "E", "O"])
    parser.add_argument("--stopbits", type=int, default=1, choices=[1, 2])
    parser.add_argument("--control-port", type=int, help="HTTP control API on 127.0.0.1 (stats, injections)")
    parser.add_argument("--log-level", default="INFO")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    try:
        sentinels = dict(item.split("=", 1) for item in args.sentinel)
        alarms = [(group, int(bit)) for group, bit in (item.split(":", 1) for item in args.alarm)]
        simulator = Kub1063Simulator(
            load_profile(args.profile), unit=args.unit, seed=args.seed, day=args.day, strict=args.strict,
            latency_ms=args.latency_ms, drop_rate=args.drop_rate, alarms=alarms,
        )
        for name, status in sentinels.items():
            simulator.set_sentinel(name, status)
    except (ValueError, KeyError) as exc:
        print(f"kubmesh simulate: {exc}")
        return 2

    async def service(stop: asyncio.Event) -> None:
        runner: web.AppRunner | None = None
        if args.control_port:
            runner = web.AppRunner(create_control_api(simulator), access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", args.control_port).start()
        if args.serial:
            await simulator.start_serial(args.serial, args.baudrate, args.parity, args.stopbits)
            where = f"{args.serial} at {args.baudrate} 8{args.parity}{args.stopbits}"
        else:
            await simulator.start_tcp(args.host, args.port)
            where = f"tcp://{args.host}:{args.port}"
        log.info("KUB-1063 simulator (unit %d%s) on %s", args.unit, ", strict" if args.strict else "", where)
        try:
            await stop.wait()
        finally:
            await simulator.stop()
            if runner:
                await runner.cleanup()

    return run_until_signalled(service)
