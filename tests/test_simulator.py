"""The KUB-1063 simulator as a real Modbus server, read and written by a real pymodbus client."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient, ModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from farm_agent.decode import decode_alarms, decode_firmware, decode_values
from farm_agent.profile import load_profile
from farm_agent.simulator import Kub1063Simulator, SimulatorError
from tests.helpers import REPO, ServiceProcess, free_port, wait_until

PROFILE = load_profile()
LIVE_STATE = (0x0081, 86)  # every documented input register but the firmware, in one block
ILLEGAL_ADDRESS, DEVICE_FAILURE = 2, 4


class FakeClock:
    def __init__(self, now: float = 1_764_000_000.0) -> None:  # 2025-11-24 16:00 UTC
        self.now = now

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def serving(reply_timeout: float = 1.0, **options: Any
                  ) -> AsyncIterator[tuple[Kub1063Simulator, AsyncModbusTcpClient]]:
    simulator = Kub1063Simulator(**options)
    port = free_port()
    await simulator.start_tcp("127.0.0.1", port)
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=reply_timeout, retries=0, reconnect_delay=0)
    assert await client.connect()
    try:
        yield simulator, client
    finally:
        client.close()
        await simulator.stop()


async def read_state(client: AsyncModbusTcpClient, start: int = LIVE_STATE[0], count: int = LIVE_STATE[1]
                     ) -> dict[int, int]:
    response = await client.read_input_registers(start, count=count, device_id=1)
    assert not response.isError(), response
    return dict(zip(range(start, start + count), response.registers, strict=True))


def decoded(registers: dict[int, int]) -> tuple[dict[str, Any], dict[str, Any]]:
    return decode_values(PROFILE, registers)


def registers_now(simulator: Kub1063Simulator, start: int = LIVE_STATE[0], count: int = LIVE_STATE[1]
                  ) -> dict[int, int]:
    return dict(zip(range(start, start + count), simulator.read("input", start, count), strict=True))


async def test_one_block_read_decodes_to_plausible_values() -> None:
    async with serving(day=12) as (_, client):
        values, status = decoded(await read_state(client))
    assert set(values) == {spec.name for spec in PROFILE.values if spec.function == "input"}  # one input block
    assert set(status.values()) == {"ok"}
    assert values["temp_target"] == 24.0
    assert 18.0 <= values["temp_inside"] <= 30.0
    assert values["temp_vent_activation"] > values["temp_target"]
    assert 55 <= values["humidity"] <= 75
    assert 800 <= values["co2"] <= 2500
    assert 0 < values["nh3"] < 10
    assert 10 <= values["pressure"] <= 30
    assert 0 <= values["ventilation_level"] <= 100 and 0 <= values["ventilation_target"] <= 100
    assert values["ventilation_scheme"] in (0, 1)
    assert values["day_counter"] == 12


async def test_firmware_reads_401() -> None:
    firmware = PROFILE.firmware
    assert firmware is not None
    async with serving() as (_, client):
        response = await client.read_input_registers(firmware.address, count=1, device_id=1)
    assert response.registers == [401]
    assert decode_firmware(401, firmware.scale) == "4.01"


async def test_strict_mode_refuses_blocks_that_span_undocumented_addresses() -> None:
    async with serving(strict=True) as (_, client):
        spanning = await client.read_input_registers(0x0081, count=0x009D - 0x0081, device_id=1)  # up to 0x009C
        assert spanning.isError() and spanning.exception_code == ILLEGAL_ADDRESS
        gap = await client.read_input_registers(0x00A3, count=1, device_id=1)
        assert gap.isError() and gap.exception_code == ILLEGAL_ADDRESS
        for start, count in ((0x0081, 0x009C - 0x0081), (0x00A2, 1), (0x00C0, 0x00D7 - 0x00C0), (0x0301, 1)):
            assert len(await read_state(client, start, count)) == count
        wiring = await client.read_holding_registers(0x0100, count=0x3E, device_id=1)
        assert not wiring.isError()
        undocumented = await client.write_register(0x0040, 1, device_id=1)
        assert undocumented.isError() and undocumented.exception_code == ILLEGAL_ADDRESS


async def test_without_strict_every_address_up_to_0x03ff_answers() -> None:
    async with serving() as (_, client):
        assert len(await read_state(client)) == LIVE_STATE[1]
        assert len(await read_state(client, 0x0384, 0x7C)) == 0x7C  # up to 0x03FF
        beyond = await client.read_input_registers(0x03FF, count=2, device_id=1)
        assert beyond.isError() and beyond.exception_code == ILLEGAL_ADDRESS


async def test_alarm_reset_clears_the_latched_groups_only() -> None:
    async with serving(alarms=[("active_alarms", 3), ("active_warnings", 40)]) as (simulator, client):
        alarms = decode_alarms(PROFILE, await read_state(client))
        assert [item.bit for item in alarms["active"]] == [3]
        assert [item.bit for item in alarms["latched"]] == [3]  # an active alarm latches
        assert [item.bit for item in alarms["latched_warnings"]] == [40]
        assert (await read_state(client, 0x0082, 1))[0x0082] & 1 << 7  # the alarm relay

        simulator.set_alarm("active_alarms", 3, False)
        reset = await client.write_register(0x0020, 1, device_id=1)
        assert not reset.isError() and reset.registers == [1]  # the reply echoes the request

        registers = await read_state(client)
        assert all(registers[a] == 0 for a in [*range(0x00C4, 0x00C8), *range(0x00CC, 0x00D0)])
        assert decode_alarms(PROFILE, registers)["warnings"][0].bit == 40  # active ones stay
        assert (await client.read_holding_registers(0x0020, count=1, device_id=1)).registers == [0]
    assert [(w["address"], w["value"]) for w in simulator.writes] == [(0x0020, 1)]


async def test_time_zone_and_wiring_are_stored_and_read_back() -> None:
    async with serving(strict=True) as (simulator, client):
        assert not (await client.write_register(0x003F, (-120) & 0xFFFF, device_id=1)).isError()
        assert not (await client.write_registers(0x0130, [7, 8, 9], device_id=1)).isError()
        assert (await client.read_holding_registers(0x003F, count=1, device_id=1)).registers == [0xFF88]
        assert (await client.read_holding_registers(0x0130, count=3, device_id=1)).registers == [7, 8, 9]
    assert [w["address"] for w in simulator.writes] == [0x003F, 0x0130, 0x0131, 0x0132]


async def test_injected_sentinel_reads_the_profiles_raw_value_until_cleared() -> None:
    async with serving(sentinels={"humidity": "break"}) as (simulator, client):
        registers = await read_state(client)
        assert registers[0x0084] == 0xFFFE
        assert decoded(registers)[1]["humidity"] == "break"
        simulator.set_sentinel("temp_inside", "pending")
        simulator.set_sentinel("humidity", None)
        values, status = decoded(await read_state(client))
    assert status["temp_inside"] == "pending" and values["temp_inside"] is None
    assert status["humidity"] == "ok" and 55 <= values["humidity"] <= 75


def test_bad_injections_are_refused_with_a_reason() -> None:
    simulator = Kub1063Simulator()
    with pytest.raises(ValueError, match="no value named 'humid'"):
        simulator.set_sentinel("humid", "break")
    with pytest.raises(ValueError, match="no sentinel for status 'ok'"):
        simulator.set_sentinel("humidity", "ok")
    with pytest.raises(ValueError, match="no alarm group"):
        simulator.set_alarm("alarms", 1, True)
    with pytest.raises(ValueError, match="outside 0-63"):
        simulator.set_alarm("active_alarms", 64, True)
    with pytest.raises(ValueError, match="outside 0-1"):
        Kub1063Simulator(drop_rate=1.5)


async def test_pinned_raw_value_wins_until_unpinned() -> None:
    async with serving() as (simulator, client):
        simulator.pin_raw(0x00D5, (-200) & 0xFFFF)
        assert decoded(await read_state(client))[0]["temp_inside"] == -20.0
        simulator.pin_raw(0x00D5, None)
        assert decoded(await read_state(client))[0]["temp_inside"] > 0


async def test_requests_are_counted_per_function_and_other_units_get_no_reply() -> None:
    async with serving(reply_timeout=0.2) as (simulator, client):
        for _ in range(3):
            await read_state(client)
        await client.read_holding_registers(0x003F, count=1, device_id=1)
        await client.write_register(0x003F, 60, device_id=1)
        with pytest.raises(ModbusIOException):
            await client.read_input_registers(0x0081, count=1, device_id=2)
    assert simulator.stats["requests"] == 5
    assert simulator.stats["by_function"] == {"3": 1, "4": 3, "6": 1}
    assert simulator.stats["registers_read"] == 3 * LIVE_STATE[1] + 1


async def test_latency_delays_every_reply() -> None:
    async with serving(latency_ms=400) as (_, client):
        started = time.monotonic()
        await read_state(client)
        assert time.monotonic() - started >= 0.4
    async with serving() as (_, client):
        started = time.monotonic()
        await read_state(client)
        assert time.monotonic() - started < 0.3


async def test_drop_rate_leaves_that_share_of_requests_unanswered() -> None:
    async with serving(reply_timeout=0.1, drop_rate=1.0) as (simulator, client):
        with pytest.raises(ModbusIOException):
            await client.read_input_registers(0x0081, count=1, device_id=1)
        assert simulator.stats["dropped"] == 1
    answered = 0
    async with serving(reply_timeout=0.1, drop_rate=0.3, seed=5) as (simulator, client):
        for _ in range(20):
            if not client.connected:  # pymodbus hangs up after a few unanswered requests in a row
                await client.connect()
            try:
                await client.read_input_registers(0x0081, count=1, device_id=1)
                answered += 1
            except ModbusIOException:
                pass
        assert simulator.stats["requests"] == 20
        assert simulator.stats["dropped"] == 20 - answered
    assert 8 <= answered <= 19


@pytest.mark.parametrize(("mode", "timed_out"), [("exception", False), ("timeout", True)])
async def test_failing_writes_answer_exception_04_or_nothing(mode: str, timed_out: bool) -> None:
    async with serving(reply_timeout=0.2) as (simulator, client):
        simulator.set_fail(mode, 6)  # type: ignore[arg-type]
        assert len(await read_state(client)) == LIVE_STATE[1]  # reads go on
        if timed_out:
            with pytest.raises(ModbusIOException):
                await client.write_register(0x003F, 60, device_id=1)
        else:
            refused = await client.write_register(0x003F, 60, device_id=1)
            assert refused.isError() and refused.exception_code == DEVICE_FAILURE
        simulator.set_fail(None)
        assert not (await client.write_register(0x003F, 60, device_id=1)).isError()
    assert [w["value"] for w in simulator.writes] == [60]


def test_same_seed_and_clock_give_the_same_house() -> None:
    clock = FakeClock()
    first, second = (Kub1063Simulator(seed=3, clock=clock) for _ in range(2))
    other = Kub1063Simulator(seed=4, clock=clock)
    assert first.read("input", *LIVE_STATE) == second.read("input", *LIVE_STATE)
    assert first.read("input", *LIVE_STATE) != other.read("input", *LIVE_STATE)


def test_inside_temperature_moves_a_little_between_polls_five_seconds_apart() -> None:
    clock = FakeClock()
    simulator = Kub1063Simulator(seed=1, clock=clock)
    temperatures = []
    for _ in range(24):
        temperatures.append(decoded(registers_now(simulator, 0x00D5, 1))[0]["temp_inside"])
        clock.now += 5
    steps = [abs(b - a) for a, b in itertools.pairwise(temperatures)]
    assert max(steps) <= 0.5
    assert sum(step > 0 for step in steps) >= len(steps) // 2
    assert abs(max(temperatures) - 24.0) < 5 and abs(min(temperatures) - 24.0) < 5


def test_ventilation_follows_the_temperature_through_a_day() -> None:
    clock = FakeClock()
    simulator = Kub1063Simulator(seed=2, clock=clock, day=30)
    schemes = set()
    for _ in range(24 * 12):  # every 5 minutes for a day
        values, _ = decoded(registers_now(simulator))
        excess = values["temp_inside"] - values["temp_vent_activation"]
        schemes.add(values["ventilation_scheme"])
        if values["ventilation_scheme"] == 1:
            assert excess >= 1.4 and values["fan_output_tunnel"] > 0 and values["fan_output_base"] == 0
            assert values["digital_outputs_1"] & 0xF0 and values["digital_outputs_2"] & 1
        else:
            assert excess <= 1.6 and values["fan_output_tunnel"] == 0
            assert values["digital_outputs_1"] & 0xF0 == 0
        if excess > 1:
            assert values["ventilation_target"] > 30
        if excess < -1:
            assert values["ventilation_target"] == 10
        clock.now += 300
    assert schemes == {0, 1}
    assert values["day_counter"] == 30  # a day later, less five minutes
    clock.now += 300
    assert simulator.read("input", 0x00D3) == [31]



async def test_rtu_at_9600_8n1_through_a_serial_pair(serial_pair: tuple[Path, Path]) -> None:
    device_end, master_end = serial_pair
    simulator = Kub1063Simulator(sentinels={"co2": "error"})
    await simulator.start_serial(str(device_end), 9600, "N", 1)
    client = AsyncModbusSerialClient(str(master_end), baudrate=9600, bytesize=8, parity="N", stopbits=1,
                                     timeout=1, retries=0)
    try:
        assert await client.connect()
        response = await client.read_input_registers(LIVE_STATE[0], count=LIVE_STATE[1], device_id=1)
        assert not response.isError(), response
        values, status = decoded(dict(zip(range(LIVE_STATE[0], sum(LIVE_STATE)), response.registers, strict=True)))
        assert values["temp_target"] == 24.0 and status["co2"] == "error"
        assert (await client.read_input_registers(0x0301, count=1, device_id=1)).registers == [401]
        assert not (await client.write_register(0x0020, 1, device_id=1)).isError()
    finally:
        client.close()
        await simulator.stop()
    assert simulator.stats["by_function"] == {"4": 2, "6": 1}


async def test_a_second_start_or_a_taken_port_is_a_clear_error() -> None:
    async with serving() as (simulator, client):
        with pytest.raises(SimulatorError, match="serving already"):
            await simulator.start_tcp("127.0.0.1", free_port())
        other = Kub1063Simulator()
        with pytest.raises(SimulatorError, match=f"tcp://127.0.0.1:{client.comm_params.port}"):
            await other.start_tcp("127.0.0.1", client.comm_params.port)


def control(port: int, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_kubmesh_simulate_serves_modbus_and_its_control_api(tmp_path: Path) -> None:
    port, control_port = free_port(), free_port()
    process = ServiceProcess(
        ["simulate", "--port", str(port), "--control-port", str(control_port), "--strict", "--seed", "9",
         "--day", "21", "--sentinel", "co2=error", "--alarm", "active_warnings:2"],
        tmp_path / "simulator.log",
    ).wait_port(port)
    client = ModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0)
    try:
        wait_until(lambda: control(control_port, "/stats")[0] == 200, 10, what="the control API")
        assert f"listening on tcp://127.0.0.1:{port}" in process.output()
        assert client.connect()

        def state() -> tuple[dict[str, Any], dict[str, Any], dict[str, list[Any]]]:
            registers = dict(zip(range(0x00C0, 0x00D7), client.read_input_registers(0x00C0, count=0x17).registers,
                                 strict=True))
            registers.update(zip(range(0x0081, 0x009C), client.read_input_registers(0x0081, count=0x1B).registers,
                                 strict=True))
            return *decoded(registers), decode_alarms(PROFILE, registers)

        values, status, alarms = state()
        assert values["day_counter"] == 21 and status["co2"] == "error"
        assert [item.bit for item in alarms["warnings"]] == [2]

        assert control(control_port, "/sentinel", {"name": "humidity", "status": "break"}) == (200, {"ok": True})
        assert control(control_port, "/sentinel", {"name": "co2", "status": None})[0] == 200
        assert control(control_port, "/alarm", {"group": "active_alarms", "bit": 9, "on": True})[0] == 200
        assert control(control_port, "/raw", {"address": 0x00D5, "value": 250, "function": "input"})[0] == 200
        values, status, alarms = state()
        assert status["humidity"] == "break" and status["co2"] == "ok" and values["temp_inside"] == 25.0
        assert [item.bit for item in alarms["active"]] == [9] and [item.bit for item in alarms["latched"]] == [9]

        assert control(control_port, "/fail", {"mode": "exception", "function": 6})[0] == 200
        assert client.write_register(0x0020, 1).exception_code == DEVICE_FAILURE
        assert control(control_port, "/fail", {"mode": None})[0] == 200
        assert not client.write_register(0x0020, 1).isError()

        for path, body in (("/sentinel", {"name": "nope", "status": "break"}), ("/alarm", {"group": "active_alarms"}),
                           ("/raw", {"address": "0xD5", "value": 1}), ("/fail", {"mode": "sometimes"}),
                           ("/raw", [1, 2])):
            code, answer = control(control_port, path, body)
            assert code == 400 and answer["error"], (path, answer)

        stats = control(control_port, "/stats")[1]
        assert stats["by_function"] == {"4": 4, "6": 2}
        assert stats["requests"] == 6 and stats["registers_read"] == 2 * (0x17 + 0x1B)
        assert [(w["address"], w["value"]) for w in stats["writes"]] == [(0x0020, 1)]  # the refused one is not
    finally:
        client.close()
        assert process.stop() == 0


@pytest.mark.parametrize(("flag", "message"), [
    (["--sentinel", "humidity"], "expected NAME=STATUS"),
    (["--sentinel", "humidity=ok"], "no sentinel for status 'ok'"),
    (["--alarm", "active_alarms:x"], "expected GROUP:BIT"),
    (["--drop-rate", "2"], "fraction from 0 to 1"),
    (["--profile", "nope.yaml"], "cannot read the profile"),
])
def test_bad_options_stop_with_a_message(flag: list[str], message: str) -> None:
    result = subprocess.run([sys.executable, "-m", "kubmesh", "simulate", "--port", str(free_port()), *flag],
                            capture_output=True, text=True, timeout=20, cwd=REPO)
    assert result.returncode == 2
    assert message in result.stderr
