"""``kubmesh simulate``: the options, and serving until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from aiohttp import web

from common.logs import setup_logging
from common.runtime import run_until_signalled
from farm_agent.profile import ProfileError, load_profile
from farm_agent.simulator.bus import SimulatedBus, SimulatorError
from farm_agent.simulator.control_api import create_control_api
from farm_agent.simulator.device import Kub1063Simulator

log = logging.getLogger("kubmesh.simulator")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("simulate", help="run a simulated KUB-1063 (Modbus TCP, or RTU on a serial port)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5020, help="Modbus TCP port (default 5020)")
    parser.add_argument("--unit", type=int, default=1, help="Modbus unit id (default 1)")
    parser.add_argument("--units", type=_units, metavar="N,N,...",
                        help="serve a bus: these unit ids on the one port, each with its own state (e.g. 1,2,3)")
    parser.add_argument("--profile", help="device profile: a shipped name or a YAML file (default kub1063)")
    parser.add_argument("--seed", type=int, default=0, help="random seed, for repeatable values (default 0)")
    parser.add_argument("--day", type=int, default=1, help="day of the growing cycle to start at (default 1)")
    parser.add_argument("--strict", action="store_true",
                        help="answer exception 02 to requests that touch undocumented addresses")
    parser.add_argument("--sentinel", action="append", default=[], type=_sentinel, metavar="NAME=STATUS",
                        help="make a value read a sensor status: pending, break, error or disabled (repeatable)")
    parser.add_argument("--alarm", action="append", default=[], type=_alarm, metavar="GROUP:BIT",
                        help="raise an alarm bit, e.g. active_alarms:3 (repeatable)")
    parser.add_argument("--latency-ms", type=float, default=0.0, metavar="N", help="delay every reply by N ms")
    parser.add_argument("--pace", action="store_true",
                        help="answer as late as request and reply take on an RS-485 line at --baudrate (a pty or "
                             "loopback does not pace bytes; for timing the bus)")
    parser.add_argument("--drop-rate", type=_fraction, default=0.0, metavar="P",
                        help="fraction of requests left unanswered, 0-1")
    parser.add_argument("--serial", metavar="DEVICE", help="serve Modbus RTU on this serial device instead of TCP")
    parser.add_argument("--baudrate", type=int, default=9600, help="serial speed (default 9600)")
    parser.add_argument("--parity", default="N", choices=["N", "E", "O"], help="serial parity (default N)")
    parser.add_argument("--stopbits", type=int, default=1, choices=[1, 2], help="serial stop bits (default 1)")
    parser.add_argument("--control-port", type=int, metavar="N",
                        help="HTTP control API on 127.0.0.1:N (statistics, injected faults)")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    try:
        profile = load_profile(args.profile)
        # each unit its own seed and day, so the houses of a bus read differently
        simulators = [
            Kub1063Simulator(
                profile, unit=unit, seed=args.seed + index, day=args.day + index, strict=args.strict,
                latency_ms=args.latency_ms, pace_baud=args.baudrate if args.pace else None,
                drop_rate=args.drop_rate, sentinels=dict(args.sentinel),
                alarms=args.alarm,
            )
            for index, unit in enumerate(args.units or [args.unit])
        ]
        bus = SimulatedBus(simulators)
    except (ProfileError, ValueError) as exc:
        print(f"kubmesh simulate: {exc}", file=sys.stderr)
        return 2

    async def service(stop: asyncio.Event) -> None:
        runner = web.AppRunner(create_control_api(simulators), access_log=None)
        await runner.setup()
        try:
            if args.control_port:
                await _listen(web.TCPSite(runner, "127.0.0.1", args.control_port), args.control_port)
            if args.serial:
                await bus.start_serial(args.serial, args.baudrate, args.parity, args.stopbits)
                where = f"{args.serial} at {args.baudrate} 8{args.parity}{args.stopbits}"
            else:
                await bus.start_tcp(args.host, args.port)
                where = f"tcp://{args.host}:{args.port}"
            control = f", control API on http://127.0.0.1:{args.control_port}" if args.control_port else ""
            units = ",".join(str(simulator.unit) for simulator in simulators)
            log.info("KUB-1063 simulator (unit%s %s%s) listening on %s%s", "s" if len(simulators) > 1 else "",
                     units, ", strict" if args.strict else "", where, control)
            await stop.wait()
        finally:
            await bus.stop()
            await runner.cleanup()

    try:
        return run_until_signalled(service)
    except SimulatorError as exc:
        log.error("%s", exc)
        return 1


async def _listen(site: web.TCPSite, port: int) -> None:
    try:
        await site.start()
    except OSError as exc:
        raise SimulatorError(f"cannot serve the control API on 127.0.0.1:{port} ({exc.strerror})") from None


def _sentinel(text: str) -> tuple[str, str]:
    name, sep, status = text.partition("=")
    if not (sep and name and status):
        raise argparse.ArgumentTypeError(f"expected NAME=STATUS, e.g. humidity=break, not {text!r}")
    return name, status


def _alarm(text: str) -> tuple[str, int]:
    group, sep, bit = text.partition(":")
    if not (sep and group and bit.isdigit()):
        raise argparse.ArgumentTypeError(f"expected GROUP:BIT, e.g. active_alarms:3, not {text!r}")
    return group, int(bit)


def _units(text: str) -> list[int]:
    try:
        units = [int(part) for part in text.split(",")]
    except ValueError:
        units = []
    if not units or len(set(units)) != len(units):
        raise argparse.ArgumentTypeError(f"expected distinct unit ids separated by commas, e.g. 1,2,3, not {text!r}")
    return units


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction from 0 to 1, not {text!r}")
    return value
