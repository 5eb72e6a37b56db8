"""What the SMS fallback needs of a GSM modem, whichever library drives it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class ModemError(Exception):
    """The modem is missing, refused a command, or did not answer; the text says which."""


@dataclass(frozen=True)
class ModemStatus:
    registered: bool  # on a network (home or roaming): it can send
    network: str | None = None  # the operator's code or name, e.g. "250 01"
    signal_percent: int | None = None


class Modem(Protocol):
    device: str

    async def open(self) -> None:
        """Connect to the modem; raises :class:`ModemError`."""

    async def status(self) -> ModemStatus:
        """Registration and signal, asked of the modem now; raises :class:`ModemError`."""

    async def send(self, number: str, text: str) -> int:
        """Send ``text`` to ``number`` (as several linked parts if long); the parts sent. Raises :class:`ModemError`."""

    async def close(self) -> None:
        """Let the port go; never raises."""


class UnavailableModem:
    """Stands in when the modem library cannot be loaded: every call says why, so health shows it."""

    def __init__(self, device: str, reason: str) -> None:
        self.device = device
        self.reason = reason

    async def open(self) -> None:
        raise ModemError(self.reason)

    async def status(self) -> ModemStatus:
        raise ModemError(self.reason)

    async def send(self, number: str, text: str) -> int:
        raise ModemError(self.reason)

    async def close(self) -> None:
        pass


def make_modem(device: str, connection: str = "at") -> Modem:
    """The modem at ``device``. python-gammu is imported here, only for an agent that has a modem."""
    try:
        from farm_agent.sms.gammu_modem import GammuModem
    except ImportError as exc:
        return UnavailableModem(device, f"the modem library is missing ({exc}): install kubmesh[sms]")
    return GammuModem(device, connection)
