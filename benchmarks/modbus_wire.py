"""Modbus wire efficiency of one poll of the KUB-1063, over RTU at 9600 8N1 through a socat pty pair.

Measured in one run, against the same simulator:
- kubmesh's planned block reads (a lenient device, and a strict one that refuses undocumented addresses);
- the previous software's way: every register read alone, 75 ms apart (it slept 50-100 ms), reconnecting
  every cycle.
A pty does not pace bytes at the baud rate, so the wire time is computed from the bytes exchanged
(10 bits a byte at 8N1, 3.5 character times of silence before every frame); wall time through the
pty is printed too, with the baseline's sleeps in it.

    python benchmarks/modbus_wire.py [--polls 20]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from farm_agent.link import ModbusLink, ModbusUrl
from farm_agent.poller import Poller
from farm_agent.profile import load_profile
from farm_agent.simulator import Kub1063Simulator

BAUD = 9600
BITS_PER_BYTE = 10  # start + 8 data + stop
BASELINE_SLEEP_S = 0.075


@dataclass
class Result:
    name: str
    transactions: float
    bytes: float
    wall_s: float

    @property
    def wire_s(self) -> float:
        """The lower bound on the line: every byte at 9600 baud plus 3.5 silent characters per frame."""
        char_s = BITS_PER_BYTE / BAUD
        return self.bytes * char_s + 2 * self.transactions * 3.5 * char_s


async def planned(device: str, polls: int, strict: bool, name: str) -> Result:
    link = ModbusLink(ModbusUrl.parse(f"rtu://{device}?baudrate={BAUD}&unit=1"))
    poller = Poller(load_profile(), link)
    await poller.poll()  # let the plan settle (a strict device refuses the first block)
    before = (link.counters.transactions, link.counters.bytes_sent + link.counters.bytes_received)
    started = time.perf_counter()
    for _ in range(polls):
        result = await poller.poll()
        assert result.values["temp_inside"] is not None
    wall = (time.perf_counter() - started) / polls
    transactions = (link.counters.transactions - before[0]) / polls
    total = (link.counters.bytes_sent + link.counters.bytes_received - before[1]) / polls
    link.close()
    return Result(name + (" (strict device)" if strict else ""), transactions, total, wall)


async def one_register_at_a_time(device: str, polls: int) -> Result:
    profile = load_profile()
    addresses = profile.input_registers()
    assert profile.firmware is not None
    transactions = total = 0
    started = time.perf_counter()
    for _ in range(polls):
        link = ModbusLink(ModbusUrl.parse(f"rtu://{device}?baudrate={BAUD}&unit=1"))  # a reconnect every cycle
        for address in [profile.firmware.address, *addresses]:
            await link.read("input", address, 1)
            await asyncio.sleep(BASELINE_SLEEP_S)
        transactions += link.counters.transactions
        total += link.counters.bytes_sent + link.counters.bytes_received
        link.close()
    wall = (time.perf_counter() - started) / polls
    return Result("one register at a time", transactions / polls, total / polls, wall)


def serial_pair(folder: Path, name: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
    """Two connected pseudo-terminals, as a USB RS-485 adapter and the controller would be."""
    a, b = folder / f"{name}-a", folder / f"{name}-b"
    socat = subprocess.Popen(["socat", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
                             stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 5
    while not (a.exists() and b.exists()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return socat, a, b


async def run(polls: int) -> list[Result]:
    if shutil.which("socat") is None:
        raise SystemExit("socat is needed (apt-get install socat)")
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for strict in (False, True):
            socat, a, b = serial_pair(Path(folder), f"strict-{strict}")
            try:
                simulator = Kub1063Simulator(strict=strict)
                await simulator.start_serial(str(a), BAUD)
                results.append(await planned(str(b), polls, strict, "kubmesh block plan"))
                if not strict:
                    results.append(await one_register_at_a_time(str(b), max(2, polls // 5)))
                await simulator.stop()
            finally:
                socat.terminate()
                socat.wait()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--polls", type=int, default=20)
    results = asyncio.run(run(parser.parse_args().polls))
    print(f"Modbus RTU {BAUD} 8N1, one poll of the KUB-1063 live state (every value and alarm group)\n")
    print(f"{'way of reading':<40} {'requests':>9} {'bytes':>7} {'wire time':>10} {'wall time (pty)':>16}")
    for result in results:
        print(f"{result.name:<40} {result.transactions:>9.1f} {result.bytes:>7.0f} {result.wire_s * 1000:>8.1f} ms"
              f" {result.wall_s * 1000:>13.1f} ms")
    ours, baseline = results[0], results[1]
    print(f"\nblock plan vs one at a time: {baseline.transactions / ours.transactions:.0f}x fewer requests, "
          f"{baseline.bytes / ours.bytes:.1f}x fewer bytes, {baseline.wire_s / ours.wire_s:.1f}x less wire time, "
          f"{baseline.wall_s / ours.wall_s:.0f}x less wall time")


if __name__ == "__main__":
    main()
