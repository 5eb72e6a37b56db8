"""A GSM modem through python-gammu (Gammu's AT driver): every use of the library is in this module.

Gammu's calls block on the serial port, so they run on one worker thread of their own (a Gammu
state machine is not to be shared between threads) and the event loop never waits on the modem.
After any failure the state machine is dropped; the next call connects again, so a modem that
was unplugged and plugged back in is used again without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import gammu

from farm_agent.sms.modem import ModemError, ModemStatus

T = TypeVar("T")

REGISTERED = frozenset({"HomeNetwork", "RoamingNetwork"})
CALL_TIMEOUT = 120.0  # seconds: beyond Gammu's own timeouts, so a wedged port shows as an error


class GammuModem:
    def __init__(self, device: str, connection: str = "at") -> None:
        self.device = device
        self.connection = connection
        self._machine: Any = None  # gammu.StateMachine, on the worker thread only
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sms-modem")

    async def open(self) -> None:
        await self._call(self._connect)

    async def status(self) -> ModemStatus:
        return await self._call(self._status)

    async def send(self, number: str, text: str) -> int:
        return await self._call(lambda: self._send(number, text))

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._worker, self._drop)
        self._worker.shutdown(wait=False)

    async def _call(self, work: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.run_in_executor(self._worker, self._guarded, work), CALL_TIMEOUT)
        except TimeoutError:
            raise ModemError(f"{self.device}: no answer in {CALL_TIMEOUT:.0f} s") from None

    def _guarded(self, work: Callable[[], T]) -> T:
        try:
            if self._machine is None:
                self._connect()
            return work()
        except gammu.GSMError as exc:
            self._drop()
            raise ModemError(f"{self.device}: {_reason(exc)}") from None

    def _connect(self) -> None:
        if self._machine is not None:
            return
        machine = gammu.StateMachine()
        machine.SetConfig(0, {"Device": self.device, "Connection": self.connection,
                              "StartInfo": False, "UseGlobalDebugFile": False})
        machine.Init()
        self._machine = machine

    def _drop(self) -> None:
        machine, self._machine = self._machine, None
        if machine is not None:
            with contextlib.suppress(gammu.GSMError):  # the port is already gone; nothing is left to close
                machine.Terminate()

    def _status(self) -> ModemStatus:
        signal = self._machine.GetSignalQuality()
        network = self._machine.GetNetworkInfo()
        percent = signal.get("SignalPercent")
        return ModemStatus(
            registered=network.get("State") in REGISTERED,
            network=network.get("NetworkName") or network.get("NetworkCode") or None,
            signal_percent=percent if isinstance(percent, int) and 0 <= percent <= 100 else None,
        )

    def _send(self, number: str, text: str) -> int:
        # GSM 7-bit for plain ASCII (160 characters a part), UCS-2 for Cyrillic (70)
        parts = gammu.EncodeSMS({"Class": -1, "Unicode": not text.isascii(),
                                 "Entries": [{"ID": "ConcatenatedTextLong", "Buffer": text}]})
        for part in parts:
            part["SMSC"] = {"Location": 1}  # the SIM's own service centre
            part["Number"] = number
            self._machine.SendSMS(part)
        return len(parts)


def _reason(exc: gammu.GSMError) -> str:
    detail = exc.args[0] if exc.args else None
    if isinstance(detail, dict):
        return f"{detail.get('Text', 'error')} ({type(exc).__name__}, in {detail.get('Where', '?')})"
    return f"{type(exc).__name__}: {exc}"
