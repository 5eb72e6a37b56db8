"""What the pages know of a farm's device: only what the farm itself publishes in ``meta.profile``.

Nothing here is about one controller model. A farm whose agent runs another profile shows its own
values, labels and controls; a farm on an older agent (profile version 1: names and units only) is
shown from those, and one with no ``meta`` yet from the names in its ``state``.
"""

from __future__ import annotations

from contract.payloads import Labels, ProfileSummary, Reading, ValueInfo, WritableInfo

NAMED_BITS_VERSION = 2  # from this profile version on, an alarm item without labels is an unnamed bit


def value_infos(profile: ProfileSummary | None, state: Reading | None = None) -> list[ValueInfo]:
    """The farm's values in display order (lowest ``order`` first)."""
    if profile is not None and profile.value_info:
        return sorted(profile.value_info, key=lambda info: info.order)
    names = profile.values if profile is not None else sorted(state.values) if state else []
    units = profile.units if profile is not None else {}
    return [ValueInfo(name=name, unit=units.get(name), order=rank) for rank, name in enumerate(names)]


def value_info(profile: ProfileSummary | None, name: str) -> ValueInfo | None:
    return next((info for info in value_infos(profile) if info.name == name), None)


def main_value(profile: ProfileSummary | None, state: Reading | None = None) -> ValueInfo | None:
    """The value a farm is summed up by in the list: the first number in the profile's order."""
    return next((info for info in value_infos(profile, state) if info.kind == "number"), None)


def writable_infos(profile: ProfileSummary | None) -> list[WritableInfo]:
    if profile is None:
        return []
    if profile.writable_info:
        return profile.writable_info
    return [WritableInfo(name=name) for name in profile.writable]  # version 1: no limits known here


def writable_info(profile: ProfileSummary | None, name: str) -> WritableInfo | None:
    return next((info for info in writable_infos(profile) if info.name == name), None)


def bit_labels(profile: ProfileSummary | None, kind: str, bit: int) -> Labels | None:
    """The labels a farm's profile gives bit ``bit`` of its ``kind`` ("alarm"/"warning") groups, if any."""
    groups = [group for group in (profile.alarm_groups if profile else []) if group.kind == kind]
    return next((group.labels[bit] for group in sorted(groups, key=lambda g: g.latched) if bit in group.labels),
                None)


def names_bits(profile: ProfileSummary | None) -> bool:
    """Whether the farm's alarm items say which bits are named (else their ``label`` text is all there is)."""
    return profile is not None and profile.version >= NAMED_BITS_VERSION
