"""Plan Modbus reads: the profile's registers coalesced into as few requests as allowed."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

MAX_READ = 125  # registers per Read Input/Holding Registers request


@dataclass(frozen=True, order=True)
class Block:
    start: int
    count: int

    @property
    def end(self) -> int:
        return self.start + self.count

    def __str__(self) -> str:
        return f"0x{self.start:04X}+{self.count}"


def plan_blocks(addresses: Iterable[int], max_gap: int = MAX_READ, max_count: int = MAX_READ) -> list[Block]:
    """Cover ``addresses`` with the fewest blocks of at most ``max_count`` registers.

    Two wanted registers go into the same block when the undocumented gap
    between them is at most ``max_gap`` registers: reading a few unused words is
    far cheaper on a 9600-baud line than a second request.
    """
    blocks: list[Block] = []
    for address in sorted(set(addresses)):
        if blocks:
            last = blocks[-1]
            gap = address - last.end
            if gap <= max_gap and address - last.start < max_count:
                blocks[-1] = Block(last.start, address - last.start + 1)
                continue
        blocks.append(Block(address, 1))
    return blocks
