"""A GSM modem that runs here: a socat pty pair, with a process at one end answering AT commands as a modem would.

The other end, :attr:`SimulatedModem.device`, is what the agent opens as ``sms.device``. The
modem's process (``python -m tests.gsm_modem DIR``: a process of its own, because python-gammu
keeps the GIL while it waits on the port and would starve a thread beside it) answers what Gammu's
AT driver asks when it connects, reports registration and signal as ``DIR/modem.json`` says, takes
SMS in PDU mode (``AT+CMGS``) and records each message, its linked parts joined, as a line of
``DIR/messages.jsonl``. :meth:`SimulatedModem.unplug` ends it and socat, so the device disappears
as a USB modem's does; :meth:`SimulatedModem.plug` brings it back at the same path.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.helpers import REPO, wait_until

OK = b"\r\nOK\r\n"

# Gammu asks these while it connects and reads the network; anything else is answered OK
ANSWERS: dict[bytes, bytes] = {
    b"AT+CGMI": b"SIMCOM_Ltd",
    b"AT+CGMM": b"SIMCOM_SIM800L",
    b"AT+CGMR": b"Revision:1418B05SIM800L24",
    b"AT+CGSN": b"866782042012345",
    b"AT+CPIN?": b"+CPIN: READY",
    b"AT+CSCS?": b'+CSCS: "GSM"',
    b"AT+CSCS=?": b'+CSCS: ("IRA","GSM","UCS2")',
    b"AT+CPMS=?": b'+CPMS: ("SM","ME"),("SM","ME"),("SM","ME")',
    b"AT+CSCA?": b'+CSCA: "+79037011111",145',
    b"AT+CGATT?": b"+CGATT: 1",
    b"AT+COPS?": b'+COPS: 0,2,"25001"',
}
REFUSED = {b"AT+MODE=2"}  # a Siemens command a SIMCom module does not know


@dataclass(frozen=True)
class Sms:
    number: str
    text: str


class SimulatedModem:
    """The test's handle on the modem: plug, unplug, what it should answer, and the messages it took."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.device = directory / "ttyUSB2"
        self._end = directory / "ttyModemSide"
        self._messages = directory / "messages.jsonl"
        self._settings = directory / "modem.json"
        self.configure(registered=True, signal=20, refuse_sms=False)
        self._socat: subprocess.Popen[bytes] | None = None
        self._modem: subprocess.Popen[bytes] | None = None

    def configure(self, **settings: Any) -> None:
        """``registered`` (bool), ``signal`` (+CSQ's 0-31), ``refuse_sms`` (answer +CMS ERROR)."""
        current = json.loads(self._settings.read_text()) if self._settings.exists() else {}
        current.update(settings)
        temporary = self._settings.with_suffix(".tmp")
        temporary.write_text(json.dumps(current))
        temporary.replace(self._settings)

    def plug(self) -> None:
        self._socat = subprocess.Popen(
            ["socat", f"pty,raw,echo=0,link={self.device}", f"pty,raw,echo=0,link={self._end}"],
            stderr=subprocess.DEVNULL)
        wait_until(lambda: self.device.exists() and self._end.exists(), 5, what="the modem's pty pair")
        self._modem = subprocess.Popen([sys.executable, "-m", "tests.gsm_modem", str(self.directory)], cwd=REPO)

    def unplug(self) -> None:
        for process in (self._modem, self._socat):
            if process is not None:
                process.terminate()
                process.wait(5)
        self._modem = self._socat = None
        wait_until(lambda: not self.device.exists(), 5, what="the modem's device to go")

    @property
    def messages(self) -> list[Sms]:
        if not self._messages.exists():
            return []
        lines = self._messages.read_text(encoding="utf-8").splitlines()
        return [Sms(**json.loads(line)) for line in lines if line.strip()]

    def texts(self) -> list[str]:
        return [sms.text for sms in self.messages]


# ---- the modem's process ------------------------------------------------------------------------------


class _Modem:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.parts: dict[tuple[str, int], dict[int, str]] = {}
        self.taken = 0

    def settings(self) -> dict[str, Any]:
        return json.loads((self.directory / "modem.json").read_text())  # type: ignore[no-any-return]

    def serve(self, fd: int) -> None:
        buffer = b""
        pdu_expected = False
        while True:
            select.select([fd], [], [])
            try:
                data = os.read(fd, 4096)
            except OSError:  # the other end went away
                return
            if not data:
                return
            buffer += data
            while True:
                if pdu_expected:
                    if b"\x1a" not in buffer:
                        break
                    pdu, buffer = buffer.split(b"\x1a", 1)
                    pdu_expected = False
                    os.write(fd, self.message(pdu.strip()))
                    continue
                if b"\r" not in buffer:
                    break
                line, buffer = buffer.split(b"\r", 1)
                command = line.strip()
                if command.strip(b"\x1b") == b"":
                    continue  # ESC ends a message being typed; with none, a modem says nothing
                os.write(fd, command + b"\r")  # echo, as after ATE1
                if command.upper().startswith(b"AT+CMGS="):
                    os.write(fd, b"\r\n> ")
                    pdu_expected = True
                else:
                    os.write(fd, self.answer(command.upper()))

    def answer(self, command: bytes) -> bytes:
        if command in REFUSED:
            return b"\r\nERROR\r\n"
        if command == b"AT+CSQ":
            return b"\r\n+CSQ: %d,0\r\n" % self.settings()["signal"] + OK
        if command in (b"AT+CREG?", b"AT+CGREG?"):
            state = 1 if self.settings()["registered"] else 0
            return b'\r\n%s: 2,%d,"1A2B","00C3D4E5"\r\n' % (command[2:-1], state) + OK
        answer = ANSWERS.get(command)
        return (b"\r\n" + answer + b"\r\n" + OK) if answer is not None else OK

    def message(self, pdu_hex: bytes) -> bytes:
        import gammu

        if self.settings()["refuse_sms"]:
            return b"\r\n+CMS ERROR: 500\r\n"
        sms = gammu.DecodePDU(bytes.fromhex(pdu_hex.decode()), True)
        udh = sms.get("UDH") or {}
        if udh.get("Type") == "ConcatenatedMessages" and udh.get("AllParts", 1) > 1:
            key = (sms["Number"], udh["ID8bit"] if udh["ID8bit"] >= 0 else udh["ID16bit"])
            parts = self.parts.setdefault(key, {})
            parts[udh["PartNumber"]] = sms["Text"]
            if len(parts) == udh["AllParts"]:
                del self.parts[key]
                self.record(sms["Number"], "".join(parts[n] for n in sorted(parts)))
        else:
            self.record(sms["Number"], sms["Text"])
        self.taken += 1
        return b"\r\n+CMGS: %d\r\n" % (self.taken % 256) + OK

    def record(self, number: str, text: str) -> None:
        with (self.directory / "messages.jsonl").open("a", encoding="utf-8") as out:
            out.write(json.dumps({"number": number, "text": text}, ensure_ascii=False) + "\n")


def main(directory: Path) -> None:
    fd = os.open(directory / "ttyModemSide", os.O_RDWR | os.O_NOCTTY)
    try:
        _Modem(directory).serve(fd)
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
