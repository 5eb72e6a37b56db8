"""The agent's Modbus link to the controller: one owner of the bus, every request serialised.

``MODBUS_URL`` is ``tcp://host:502?unit=1`` (an RS-485-to-TCP converter) or
``rtu:///dev/ttyUSB0?baudrate=9600&parity=N&stopbits=1&unit=1`` (a USB adapter).
pymodbus errors are converted here into the three failures callers treat
differently: the device answered with an exception code, it did not answer in
time, or the link itself is down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from farm_agent.profile import LinkDefaults

log = logging.getLogger("kubmesh.agent.modbus")

# Modbus RTU framing overhead on the wire: request 8 bytes for reads/single writes, reply 5 + 2·N bytes
READ_REQUEST_BYTES = 8
READ_REPLY_OVERHEAD = 5
WRITE_FRAME_BYTES = 8


class ModbusUrlError(ValueError):
    pass


class ModbusFailure(Exception):
    """Base of the link's failures."""


class ModbusDeviceError(ModbusFailure):
    """The device answered with a Modbus exception (02 illegal address, 03 illegal value, …)."""

    def __init__(self, code: int, what: str) -> None:
        super().__init__(f"device exception {code:02d} ({EXCEPTION_NAMES.get(code, 'unknown')}) on {what}")
        self.code = code


class ModbusTimeout(ModbusFailure):
    """No (valid) answer within the timeout."""


class ModbusLinkDown(ModbusFailure):
    """The TCP connection or serial port cannot be opened or was lost."""


EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    5: "acknowledge",
    6: "device busy",
    11: "gateway target failed to respond",
}
ILLEGAL_DATA_ADDRESS = 2


@dataclass(frozen=True)
class ModbusUrl:
    kind: str  # "tcp" or "rtu"
    target: str  # host or serial device
    port: int = 502
    unit: int = 1
    baudrate: int = 9600
    bytesize: int = 8
    parity: str = "N"
    stopbits: int = 1
    timeout_s: float = 2.0

    @classmethod
    def parse(cls, url: str, defaults: LinkDefaults | None = None) -> ModbusUrl:
        defaults = defaults or LinkDefaults()
        parts = urlsplit(url)
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        try:
            unit = int(query.pop("unit", defaults.unit))
            timeout_s = float(query.pop("timeout", defaults.timeout_s))
            if parts.scheme == "tcp":
                if not parts.hostname:
                    raise ModbusUrlError(f"Modbus URL {url!r} has no host")
                result = cls("tcp", parts.hostname, parts.port or 502, unit=unit, timeout_s=timeout_s)
            elif parts.scheme == "rtu":
                device = parts.path or parts.netloc
                if not device:
                    raise ModbusUrlError(f"Modbus URL {url!r} has no serial device")
                result = cls(
                    "rtu",
                    device,
                    baudrate=int(query.pop("baudrate", defaults.baudrate)),
                    bytesize=int(query.pop("bytesize", defaults.bytesize)),
                    parity=str(query.pop("parity", defaults.parity)).upper(),
                    stopbits=int(query.pop("stopbits", defaults.stopbits)),
                    unit=unit,
                    timeout_s=timeout_s,
                )
            else:
                raise ModbusUrlError(f"Modbus URL must start with tcp:// or rtu://, got {url!r}")
        except ValueError as exc:
            if isinstance(exc, ModbusUrlError):
                raise
            raise ModbusUrlError(f"Modbus URL {url!r}: {exc}") from None
        if query:
            raise ModbusUrlError(f"Modbus URL {url!r}: unknown option(s) {', '.join(sorted(query))}")
        if result.parity not in ("N", "E", "O"):
            raise ModbusUrlError(f"Modbus URL {url!r}: parity must be N, E or O")
        if not 0 <= result.unit <= 247:
            raise ModbusUrlError(f"Modbus URL {url!r}: unit must be 0-247")
        return result

    def __str__(self) -> str:
        if self.kind == "tcp":
            return f"tcp://{self.target}:{self.port}?unit={self.unit}"
        return (
            f"rtu://{self.target}?baudrate={self.baudrate}&parity={self.parity}"
            f"&stopbits={self.stopbits}&unit={self.unit}"
        )


@dataclass
class LinkCounters:
    """What the link did, for heartbeats, metrics and the wire-efficiency benchmark."""

    transactions: int = 0
    failures: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


class ModbusLink:
    """One pymodbus client; an asyncio lock makes every read and write take its turn on the bus."""

    def __init__(self, url: ModbusUrl) -> None:
        self.url = url
        self.counters = LinkCounters()
        self._lock = asyncio.Lock()
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient = self._make_client()

    def _make_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        # retries and reconnects are the agent's business (it backs off and reports); pymodbus does neither
        if self.url.kind == "tcp":
            return AsyncModbusTcpClient(
                self.url.target, port=self.url.port, timeout=self.url.timeout_s, retries=0, reconnect_delay=0
            )
        return AsyncModbusSerialClient(
            self.url.target,
            baudrate=self.url.baudrate,
            bytesize=self.url.bytesize,
            parity=self.url.parity,
            stopbits=self.url.stopbits,
            timeout=self.url.timeout_s,
            retries=0,
            reconnect_delay=0,
        )

    @property
    def connected(self) -> bool:
        return bool(self._client.connected)

    async def _ensure_connected(self) -> None:
        if self._client.connected:
            return
        try:
            ok = await self._client.connect()
        except (OSError, ModbusException) as exc:
            raise ModbusLinkDown(f"cannot open {self.url}: {exc}") from None
        if not ok:
            raise ModbusLinkDown(f"cannot open {self.url}")

    def close(self) -> None:
        self._client.close()

    async def read(self, function: str, address: int, count: int) -> list[int]:
        """Read ``count`` registers (``function`` is "input" or "holding") in one transaction."""
        what = f"read {function} 0x{address:04X}+{count}"
        reader = (
            self._client.read_input_registers if function == "input" else self._client.read_holding_registers
        )
        response = await self._transact(what, lambda: reader(address, count=count, device_id=self.url.unit))
        self.counters.bytes_sent += READ_REQUEST_BYTES
        self.counters.bytes_received += READ_REPLY_OVERHEAD + 2 * count
        registers = list(response.registers)
        if len(registers) < count:
            raise ModbusTimeout(f"short reply to {what}: {len(registers)} registers")
        return registers[:count]

    async def write(self, address: int, value: int) -> None:
        """Write one holding register (function 06)."""
        what = f"write 0x{address:04X}={value}"
        await self._transact(what, lambda: self._client.write_register(address, value, device_id=self.url.unit))
        self.counters.bytes_sent += WRITE_FRAME_BYTES
        self.counters.bytes_received += WRITE_FRAME_BYTES

    async def _transact(self, what: str, request: Callable[[], Awaitable[ModbusPDU]]) -> ModbusPDU:
        async with self._lock:
            self.counters.transactions += 1
            kind = what.split(" 0x")[0]
            self.counters.by_kind[kind] = self.counters.by_kind.get(kind, 0) + 1
            try:
                await self._ensure_connected()
                response = await request()
            except ModbusFailure:
                self.counters.failures += 1
                raise
            except ConnectionException as exc:
                self.counters.failures += 1
                self._client.close()
                raise ModbusLinkDown(f"link lost during {what}: {exc}") from None
            except (ModbusIOException, TimeoutError) as exc:
                self.counters.failures += 1
                raise ModbusTimeout(f"no answer to {what} within {self.url.timeout_s} s ({exc})") from None
            except (OSError, ModbusException) as exc:
                self.counters.failures += 1
                self._client.close()
                raise ModbusLinkDown(f"link error during {what}: {exc}") from None
            if response.isError():
                self.counters.failures += 1
                raise ModbusDeviceError(int(getattr(response, "exception_code", 0)), what)
            return response
