"""An RS-485 bus of simulated units: several unit ids answered on one Modbus TCP port or one serial port.

Each unit keeps its own registers and faults (:class:`~farm_agent.simulator.device.Kub1063Simulator`);
the server routes every request by its unit id, and a request for an id no unit has goes unanswered,
as on a real bus where only the addressed device replies.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import SimData, SimDevice
from pymodbus.simulator.simutils import DataType


class SimulatorError(Exception):
    """The simulator cannot serve: the port is taken, the serial device is missing, or it is serving already."""


class Unit(Protocol):
    unit: int

    def device(self) -> SimDevice: ...

    def count(self, function_code: int) -> None: ...


class SimulatedBus:
    def __init__(self, units: Sequence[Unit]) -> None:
        ids = [unit.unit for unit in units]
        if not ids:
            raise ValueError("a bus needs at least one unit")
        if len(set(ids)) != len(ids):
            raise ValueError(f"unit ids on one bus must differ: {ids}")
        self.units = {unit.unit: unit for unit in units}
        self._server: ModbusTcpServer | ModbusSerialServer | None = None

    async def start_tcp(self, host: str = "127.0.0.1", port: int = 5020) -> None:
        server = ModbusTcpServer(
            self._devices(), address=(host, port), ignore_missing_devices=True, trace_pdu=self._count
        )
        await self._serve(server, f"tcp://{host}:{port}")

    async def start_serial(self, device: str, baudrate: int = 9600, parity: str = "N", stopbits: int = 1) -> None:
        server = ModbusSerialServer(
            self._devices(), framer=FramerType.RTU, port=device, baudrate=baudrate, bytesize=8, parity=parity,
            stopbits=stopbits, ignore_missing_devices=True, trace_pdu=self._count,
        )
        await self._serve(server, f"{device} at {baudrate} 8{parity}{stopbits}")

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()
            self._server = None

    async def _serve(self, server: ModbusTcpServer | ModbusSerialServer, where: str) -> None:
        if self._server is not None:
            raise SimulatorError("the simulator is serving already")
        try:
            await server.serve_forever(background=True)
        except RuntimeError:
            raise SimulatorError(f"cannot serve Modbus on {where}") from None
        self._server = server

    def _devices(self) -> list[SimDevice]:
        silent = SimDevice(id=0, simdata=[SimData(0, count=0x10000, datatype=DataType.REGISTERS)],
                           action=_stay_silent)  # every other unit id
        return [*(unit.device() for unit in self.units.values()), silent]

    def _count(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        unit = self.units.get(pdu.dev_id)
        if not sending and unit is not None:
            unit.count(pdu.function_code)
        return pdu


async def _stay_silent(*_: Any) -> ExcCodes | None:
    raise NoSuchIdException
