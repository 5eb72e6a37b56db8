"""The agent's Modbus links: one master per bus, every request serialised, commands before polls.

``MODBUS_URL`` is ``tcp://host:502?unit=1`` (an RS-485-to-TCP converter) or
``rtu:///dev/ttyUSB0?baudrate=9600&parity=N&stopbits=1&unit=1`` (a USB adapter).
A :class:`ModbusBus` owns the one client of a link; each controller on it is a
:class:`ModbusLink`, the bus seen from one unit id. Requests take their turn on
the bus by priority (a command's write before the next poll's read), first come
first served within one priority. pymodbus errors are converted here into the
three failures callers treat differently: the device answered with an exception
code, it did not answer in time, or the link itself is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from enum import IntEnum
from urllib.parse import parse_qs, urlencode, urlsplit

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from farm_agent.profile import LinkDefaults

log = logging.getLogger("kubmesh.agent.modbus")

# Modbus RTU framing overhead on the wire: request 8 bytes for reads/single writes, reply 5 + 2·N bytes
READ_REQUEST_BYTES = 8
READ_REPLY_OVERHEAD = 5
WRITE_FRAME_BYTES = 8
SILENT_INTERVAL_CHARS = 3.5  # the gap RTU puts after every frame


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


def wire_seconds(frame_bytes: int, frames: int, baudrate: int, bytesize: int = 8, parity: str = "N",
                 stopbits: int = 1) -> float:
    """Each byte is a start bit, its data bits, parity and stop bits; each frame is followed by the 3.5-character
    silent interval of RTU."""
    bits = 1 + bytesize + (0 if parity == "N" else 1) + stopbits
    return (frame_bytes + frames * SILENT_INTERVAL_CHARS) * bits / baudrate


def url_with_unit(url: str, unit: int) -> str:
    """``url`` (its other options kept) addressing ``unit``."""
    base, _, query = url.partition("?")
    options = {key: values[-1] for key, values in parse_qs(query).items()} | {"unit": str(unit)}
    return f"{base}?{urlencode(options, safe='/')}"


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


    @property
    def link(self) -> str:
        """The link without the unit: controllers whose URLs give the same link share one bus."""
        return str(replace(self, unit=0)).removesuffix("?unit=0").removesuffix("&unit=0")

    def wire_seconds(self, frame_bytes: int, frames: int) -> float:
        """Time ``frames`` frames of ``frame_bytes`` bytes in all take on the RS-485 line (a converter's too)."""
        return wire_seconds(frame_bytes, frames, self.baudrate, self.bytesize, self.parity, self.stopbits)


class Priority(IntEnum):
    COMMAND = 0  # a person is waiting for it
    POLL = 1


class Turns:
    """A lock whose waiters are served by priority, then in the order they came."""

    def __init__(self) -> None:
        self._busy = False
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @contextlib.asynccontextmanager
    async def turn(self, priority: Priority) -> AsyncIterator[None]:
        if self._busy:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiting, (priority, next(self._order), future))
            try:
                await future
            except asyncio.CancelledError:
                if future.done() and not future.cancelled():  # handed the turn as it was cancelled: pass it on
                    self._release()
                raise
        else:
            self._busy = True
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        while self._waiting:
            _, _, future = heapq.heappop(self._waiting)
            if not future.done():
                future.set_result(None)  # the turn passes on; the bus stays busy
                return
        self._busy = False


@dataclass
class LinkCounters:
    """What the link did, for heartbeats, metrics and the wire-efficiency benchmark."""

    transactions: int = 0
    failures: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    wire_s: float = 0.0  # what the frames of these transactions take on the line, at its baud rate
    by_kind: dict[str, int] = field(default_factory=dict)

    def count(self, sent: int, received: int, wire_s: float) -> None:
        self.bytes_sent += sent
        self.bytes_received += received
        self.wire_s += wire_s


class ModbusBus:
    """One master on one link: the pymodbus client, and the turn every request of every unit takes on it."""

    def __init__(self, url: ModbusUrl) -> None:
        self.url = url
        self.counters = LinkCounters()  # the whole bus's
        self._turns = Turns()
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient = self._make_client()

    def unit(self, unit: int) -> ModbusLink:
        """The bus as one controller on it sees it."""
        return ModbusLink(replace(self.url, unit=unit), bus=self)

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

    async def transact(self, what: str, *, unit_counters: LinkCounters, priority: Priority,
                       call: Callable[[AsyncModbusTcpClient | AsyncModbusSerialClient], Awaitable[ModbusPDU]],
                       frames: tuple[int, int]) -> ModbusPDU:
        """One request and its reply, in its turn; ``frames`` are the request's and the reply's bytes."""
        async with self._turns.turn(priority):
            kind = what.split(" 0x")[0]
            for counters in (self.counters, unit_counters):
                counters.transactions += 1
                counters.by_kind[kind] = counters.by_kind.get(kind, 0) + 1
            try:
                await self._ensure_connected()
                response = await call(self._client)
            except ModbusFailure:
                self._failed(unit_counters)
                raise
            except ConnectionException as exc:
                self._failed(unit_counters)
                self._client.close()
                raise ModbusLinkDown(f"link lost during {what}: {exc}") from None
            except (ModbusIOException, TimeoutError) as exc:
                self._failed(unit_counters)
                raise ModbusTimeout(f"no answer to {what} within {self.url.timeout_s} s ({exc})") from None
            except (OSError, ModbusException) as exc:
                self._failed(unit_counters)
                self._client.close()
                raise ModbusLinkDown(f"link error during {what}: {exc}") from None
            if response.isError():
                self._failed(unit_counters)
                raise ModbusDeviceError(int(getattr(response, "exception_code", 0)), what)
            sent, received = frames
            wire = self.url.wire_seconds(sent + received, 2)
            for counters in (self.counters, unit_counters):
                counters.count(sent, received, wire)
            return response

    def _failed(self, unit_counters: LinkCounters) -> None:
        self.counters.failures += 1
        unit_counters.failures += 1


class ModbusLink:
    """One controller on a bus: its unit id, its own counters, and reads and writes that take their turn.

    Made alone (``ModbusLink(url)``) it has a bus of its own, as a controller alone on its link does.
    """

    def __init__(self, url: ModbusUrl, bus: ModbusBus | None = None) -> None:
        self.url = url
        self.bus = bus or ModbusBus(url)
        self.counters = LinkCounters()

    def close(self) -> None:
        self.bus.close()

    async def read(self, function: str, address: int, count: int, priority: Priority = Priority.POLL) -> list[int]:
        """Read ``count`` registers (``function`` is "input" or "holding") in one transaction."""
        what = f"read {function} 0x{address:04X}+{count} of unit {self.url.unit}"
        unit = self.url.unit

        def call(client: AsyncModbusTcpClient | AsyncModbusSerialClient) -> Awaitable[ModbusPDU]:
            reader = client.read_input_registers if function == "input" else client.read_holding_registers
            return reader(address, count=count, device_id=unit)

        response = await self.bus.transact(what, unit_counters=self.counters, priority=priority, call=call,
                                           frames=(READ_REQUEST_BYTES, READ_REPLY_OVERHEAD + 2 * count))
        registers = list(response.registers)
        if len(registers) < count:
            raise ModbusTimeout(f"short reply to {what}: {len(registers)} registers")
        return registers[:count]

    async def write(self, address: int, value: int, priority: Priority = Priority.COMMAND) -> None:
        """Write one holding register (function 06)."""
        what = f"write 0x{address:04X}={value} to unit {self.url.unit}"
        unit = self.url.unit
        await self.bus.transact(
            what, unit_counters=self.counters, priority=priority,
            call=lambda client: client.write_register(address, value, device_id=unit),
            frames=(WRITE_FRAME_BYTES, WRITE_FRAME_BYTES),
        )
