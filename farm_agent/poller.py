"""One poll of the controller: the planned block reads, decoded through the device profile."""

from __future__ import annotations

from dataclasses import dataclass

from broker.payloads import AlarmItem, SensorStatus
from farm_agent.blocks import Block, plan_blocks
from farm_agent.decode import decode_alarms, decode_firmware, decode_values
from farm_agent.link import ModbusLink
from farm_agent.profile import Profile


@dataclass(frozen=True)
class PollResult:
    values: dict[str, int | float | None]
    status: dict[str, SensorStatus]
    alarms: dict[str, list[AlarmItem]]
    registers: dict[int, int]


class Poller:
    def __init__(self, profile: Profile, link: ModbusLink) -> None:
        self.profile = profile
        self.link = link
        self.plan: list[Block] = plan_blocks(profile.input_registers())

    async def read_firmware(self) -> str | None:
        spec = self.profile.firmware
        if spec is None:
            return None
        (raw,) = await self.link.read(spec.function, spec.address, 1)
        return decode_firmware(raw, spec.scale)

    async def poll(self) -> PollResult:
        registers: dict[int, int] = {}
        for block in self.plan:
            words = await self.link.read("input", block.start, block.count)
            registers.update(zip(range(block.start, block.end), words, strict=True))
        values, status = decode_values(self.profile, registers)
        return PollResult(values, status, decode_alarms(self.profile, registers), registers)

    def close(self) -> None:
        self.link.close()
