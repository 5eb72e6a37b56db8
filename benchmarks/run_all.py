"""Every benchmark of benchmarks/, one after the other, each in its own process, with all their figures.

Benchmarks that are not there (yet) are listed as missing; a failing one is reported and the
others still run. The exit status is non-zero if any failed.

    python benchmarks/run_all.py [--only fleet_latency broker_memory ...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = (
    "modbus_wire",
    "agent_bytes",
    "bus_schedule",
    "agent_memory",
    "backlog_replay",
    "fleet_latency",
    "broker_memory",
    "connect_storm",
    "broker_attacks",
    "sse_fanout",
    "farm_page_load",
    "alarm_storm",
    "storage_ingest",
)
TIMEOUT_S = 1800


def run(name: str) -> tuple[str, float]:
    script = HERE / f"{name}.py"
    if not script.exists():
        return "missing", 0.0
    print(f"\n=== {name} ({script.relative_to(HERE.parent)}) ===", flush=True)
    started = time.monotonic()
    try:
        code = subprocess.run([sys.executable, str(script)], cwd=HERE.parent, timeout=TIMEOUT_S).returncode
    except subprocess.TimeoutExpired:
        return f"timed out after {TIMEOUT_S} s", time.monotonic() - started
    return ("ok" if code == 0 else f"failed (exit {code})"), time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run these only")
    args = parser.parse_args()
    outcomes = {name: run(name) for name in (args.only or BENCHMARKS)}
    print("\n=== summary ===")
    for name, (outcome, seconds) in outcomes.items():
        print(f"{name:<16} {outcome:<24} {seconds:>6.0f} s")
    return 0 if all(outcome in ("ok", "missing") for outcome, _ in outcomes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
