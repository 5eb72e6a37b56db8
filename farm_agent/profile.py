"""Device profiles: the register map of a controller as typed data, loaded from YAML.

The shipped profile is ``profiles/kub1063.yaml``. A profile that does not load
stops the agent at start with the file, the key and the reason.
"""

from __future__ import annotations

from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from contract.payloads import (
    PROFILE_VERSION,
    AlarmGroupInfo,
    Labels,
    ProfileSummary,
    SensorStatus,
    ValueInfo,
    WritableInfo,
)
from contract.topics import check_value_name

MAX_REGISTER = 0xFFFF
DEFAULT_PROFILE = "kub1063"


class ProfileError(ValueError):
    """A profile that cannot be used: the message names the file, the key and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Label(_Strict):
    en: str
    ru: str | None = None

    def get(self, language: str) -> str:
        return (self.ru if language == "ru" else None) or self.en

    def published(self) -> Labels:
        return Labels(en=self.en, ru=self.ru)


class LinkDefaults(_Strict):
    baudrate: int = 9600
    bytesize: int = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: int = 1
    unit: int = Field(1, ge=0, le=247)
    timeout_s: float = Field(2.0, gt=0)


class SentinelRange(_Strict):
    first: int = Field(ge=0, le=MAX_REGISTER)
    last: int = Field(ge=0, le=MAX_REGISTER)
    status: SensorStatus


class FirmwareSpec(_Strict):
    address: int = Field(ge=0, le=MAX_REGISTER)
    function: Literal["input", "holding"] = "input"
    scale: float = 1.0


class ValueSpec(_Strict):
    """One value read from the device, published under ``values[name]``."""

    name: str
    address: int = Field(ge=0, le=MAX_REGISTER)
    function: Literal["input", "holding"] = "input"
    type: Literal["u16", "s16", "bits16", "enum"] = "u16"
    scale: float = 1.0
    unit: str | None = None
    device_class: str | None = None
    state_class: str | None = "measurement"
    sentinels: bool = True
    deadband: float = Field(0.0, ge=0)
    options: dict[int, str] = Field(default_factory=dict)
    bits: dict[int, str] = Field(default_factory=dict)
    bit_labels: dict[int, Label] = Field(default_factory=dict)  # how a person calls a bit of ``bits``
    label: Label | None = None
    priority: int | None = None  # shown before the values without one, lowest first; the first is the main value
    icon: str | None = Field(None, pattern=r"^mdi:[a-z0-9-]+$")  # Home Assistant's icon for the entity

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        return check_value_name(name)

    @property
    def kind(self) -> Literal["number", "enum", "bitfield"]:
        return {"bits16": "bitfield", "enum": "enum"}.get(self.type, "number")  # type: ignore[return-value]

    @property
    def decimals(self) -> int:
        """Decimal places that the scale gives (0.1 → 1), used to round exactly."""
        text = f"{self.scale:.6f}".rstrip("0")
        return len(text.split(".")[1]) if "." in text else 0


class AlarmGroupSpec(_Strict):
    """A 64-bit alarm or warning bitfield over four consecutive registers."""

    name: str
    address: int = Field(ge=0, le=MAX_REGISTER - 3)
    function: Literal["input", "holding"] = "input"
    kind: Literal["alarm", "warning"]
    latched: bool
    labels: dict[int, Label] = Field(default_factory=dict)  # `3: Fan fault` or `3: {en: Fan fault, ru: …}`

    @field_validator("labels", mode="before")
    @classmethod
    def _bits(cls, labels: object) -> object:
        if not isinstance(labels, dict):
            return labels
        for bit in labels:
            if not isinstance(bit, int) or not 0 <= bit <= 63:
                raise ValueError(f"bit {bit} is outside 0-63")
        return {bit: {"en": label} if isinstance(label, str) else label for bit, label in labels.items()}

    def label(self, bit: int) -> str:
        """The English label of a bit, or "alarm bit N" for one the profile does not name."""
        named = self.labels.get(bit)
        return named.en if named else f"{self.kind} bit {bit}"

    @property
    def registers(self) -> range:
        return range(self.address, self.address + 4)


class WritableSpec(_Strict):
    """A holding register that commands may write: an ``action`` or a ``setting`` read back."""

    name: str
    address: int = Field(ge=0, le=MAX_REGISTER)
    kind: Literal["action", "setting"]
    type: Literal["u16", "s16"] = "u16"
    value: int | None = None  # the fixed value an action writes
    min: float | None = None
    max: float | None = None
    step: float | None = None
    scale: float = 1.0
    unit: str | None = None
    label: Label | None = None
    state: str | None = None  # the value (a holding register read every poll) that says what the device holds
    icon: str | None = Field(None, pattern=r"^mdi:[a-z0-9-]+$")

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        return check_value_name(name)

    @model_validator(mode="after")
    def _complete(self) -> WritableSpec:
        if self.kind == "action" and self.value is None:
            raise ValueError(f"action {self.name!r} needs the 'value' it writes")
        if self.kind == "setting" and (self.min is None or self.max is None):
            raise ValueError(f"setting {self.name!r} needs 'min' and 'max'")
        return self


class Profile(_Strict):
    model: str
    manufacturer: str | None = None
    link: LinkDefaults = LinkDefaults()
    sentinels: dict[int, SensorStatus] = Field(default_factory=dict)
    sentinel_ranges: list[SentinelRange] = Field(default_factory=list)
    firmware: FirmwareSpec | None = None
    values: list[ValueSpec]
    alarm_groups: list[AlarmGroupSpec] = Field(default_factory=list)
    writable: list[WritableSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> Profile:
        names = [v.name for v in self.values] + [g.name for g in self.alarm_groups]
        names += [w.name for w in self.writable]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise ValueError(f"names used twice: {', '.join(sorted(duplicates))}")
        values = {v.name for v in self.values}
        for writable in self.writable:
            if writable.state is not None and writable.state not in values:
                raise ValueError(f"writable {writable.name!r}: its state {writable.state!r} is not a value")
        return self

    @cached_property
    def values_by_name(self) -> dict[str, ValueSpec]:
        return {v.name: v for v in self.values}

    @cached_property
    def writable_by_name(self) -> dict[str, WritableSpec]:
        return {w.name: w for w in self.writable}

    def display_order(self) -> list[ValueSpec]:
        """Values with a ``priority`` first (lowest first), then the others in the file's order."""
        ranked = sorted(enumerate(self.values), key=lambda item: (item[1].priority is None, item[1].priority or 0,
                                                                   item[0]))
        return [spec for _, spec in ranked]

    def summary(self) -> ProfileSummary:
        """What the farm's ``meta`` says of its profile: all a page needs to show the farm and check a command."""
        order = {spec.name: rank for rank, spec in enumerate(self.display_order())}
        return ProfileSummary(
            version=PROFILE_VERSION,
            name=self.model,
            values=[v.name for v in self.values],
            writable=[w.name for w in self.writable],
            units={v.name: v.unit for v in self.values if v.unit},
            value_info=[
                ValueInfo(name=v.name, labels=v.label.published() if v.label else None, unit=v.unit,
                          decimals=v.decimals, kind=v.kind, options=v.options, bits=v.bits, order=order[v.name])
                for v in self.values
            ],
            writable_info=[
                WritableInfo(name=w.name, labels=w.label.published() if w.label else None, kind=w.kind,
                             value=w.value, min=w.min, max=w.max, step=w.step, unit=w.unit)
                for w in self.writable
            ],
            alarm_groups=[
                AlarmGroupInfo(name=g.name, kind=g.kind, latched=g.latched,
                               labels={bit: label.published() for bit, label in g.labels.items()})
                for g in self.alarm_groups
            ],
        )

    def sentinel_status(self, raw: int) -> SensorStatus | None:
        status = self.sentinels.get(raw)
        if status is not None:
            return status
        for span in self.sentinel_ranges:
            if span.first <= raw <= span.last:
                return span.status
        return None

    @cached_property
    def setting_states(self) -> dict[str, WritableSpec]:
        """The values that read a setting back, by value name, with the setting they read."""
        return {w.state: w for w in self.writable if w.state is not None}

    def holding_registers(self) -> list[int]:
        """The holding registers read every poll: the settings read back (time zone)."""
        return sorted({v.address for v in self.values if v.function == "holding"})

    def input_registers(self) -> list[int]:
        """Every input register the live state needs (firmware excluded: it is read once)."""
        addresses = {v.address for v in self.values if v.function == "input"}
        for group in self.alarm_groups:
            if group.function == "input":
                addresses.update(group.registers)
        return sorted(addresses)


def load_profile(source: str | Path | None = None) -> Profile:
    """Load the shipped profile by name (``kub1063``) or a user's profile file by path."""
    source = source or DEFAULT_PROFILE
    path = Path(source)
    if path.suffix in (".yaml", ".yml") or path.exists():
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ProfileError(f"{path}: cannot read the profile ({exc.strerror})") from None
        where = str(path)
    else:
        try:
            text = resources.files("farm_agent.profiles").joinpath(f"{source}.yaml").read_text("utf-8")
        except FileNotFoundError:
            raise ProfileError(f"no shipped profile named {str(source)!r}") from None
        where = f"shipped profile {source}"
    return parse_profile(text, where)


def parse_profile(text: str, where: str = "profile") -> Profile:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProfileError(f"{where}: not valid YAML ({exc})") from None
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        key = _key_path(data, error.get("loc", ()))
        raise ProfileError(f"{where}: {key}: {error['msg']}") from None


def _key_path(data: object, loc: tuple[int | str, ...]) -> str:
    """``values[3].scale`` becomes ``values[3] (temp_inside).scale`` to point at the entry."""
    parts: list[str] = []
    node = data
    for part in loc:
        if isinstance(part, int):
            name = node[part].get("name") if isinstance(node, list) and isinstance(node[part], dict) else None
            parts[-1] += f"[{part}]" + (f" ({name})" if name else "")
            node = node[part] if isinstance(node, list) else None
        else:
            parts.append(str(part))
            node = node.get(part) if isinstance(node, dict) else None
    return ".".join(parts) or "profile"
