"""Payload models of every kubmesh topic (CONTRACT.md), shared by all components.

Producers build these models and call :func:`encode`; consumers call
:func:`decode`, which raises :class:`PayloadError` with a readable reason for
anything that is not valid JSON of the right shape. A service logs that error
and drops the message; it never crashes on it.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_validator,
)

MAX_PAYLOAD_BYTES = 256 * 1024

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The one clock of kubmesh: timezone-aware UTC. Services take a ``clock`` to inject another."""
    return datetime.now(UTC)


def format_ts(moment: datetime) -> str:
    """ISO-8601 UTC with milliseconds and a ``Z``: ``2026-11-24T21:05:00.123Z``."""
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    # the year by hand: strftime writes year 943 as "943", which fromisoformat cannot read back
    return f"{moment.year:04d}-" + moment.strftime("%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_ts(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def to_utc(moment: datetime) -> datetime:
    """A moment in UTC (a naive one is taken as UTC), or ``ValueError`` for one that UTC cannot hold.

    ``0001-01-01T00:00:00+14:00`` parses, but is before year 1 in UTC: every later use of it
    (``astimezone``, ``timestamp``, formatting) would raise, so it is refused here, as bad input.
    """
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError("timestamp cannot be converted to UTC") from None


# Validated into UTC, so a decoded payload's times are always usable, and written as format_ts does.
Timestamp = Annotated[
    datetime, AfterValidator(to_utc), PlainSerializer(format_ts, return_type=str, when_used="always")
]
SensorStatus = Literal["ok", "pending", "break", "error", "disabled"]
Number = int | float


class WireModel(BaseModel):
    """Base of all payloads: unknown keys from newer peers are ignored, not fatal."""

    model_config = ConfigDict(extra="ignore")


class Status(WireModel):
    """``{base}/farms/{farm}/status``, retained; the agent's last will says offline."""

    state: Literal["online", "offline"]
    ts: Timestamp
    reason: str | None = None


class DeviceInfo(WireModel):
    model: str
    firmware: str | None = None
    unit: int | None = None
    link: str | None = None  # "tcp" or "rtu"


class Labels(WireModel):
    """A name said in both languages of the page; ``ru`` may be missing (then ``en`` is shown)."""

    en: str = Field(max_length=200)
    ru: str | None = Field(None, max_length=200)

    def get(self, language: str) -> str:
        return (self.ru if language == "ru" else None) or self.en


class ValueInfo(WireModel):
    """How to show one value of ``state``: its labels, unit, decimals and kind (profile version 2)."""

    name: str
    labels: Labels | None = None
    unit: str | None = None
    decimals: int | None = Field(None, ge=0, le=6)  # None: shown as published
    kind: Literal["number", "enum", "bitfield"] = "number"
    options: dict[int, str] = Field(default_factory=dict)  # an enum's raw value → its name
    bits: dict[int, str] = Field(default_factory=dict)  # a bitfield's labelled bits
    order: int = 0  # display order, lowest first: the first number is the farm's main value

    def label(self, language: str) -> str:
        return self.labels.get(language) if self.labels else self.name


class WritableInfo(WireModel):
    """A value that ``set/{name}`` may write: an ``action`` writes ``value``, a ``setting`` a number in
    ``[min, max]`` by ``step``."""

    name: str
    labels: Labels | None = None
    kind: Literal["action", "setting"] = "setting"
    value: Number | None = None
    min: Number | None = None
    max: Number | None = None
    step: Number | None = None
    unit: str | None = None

    def label(self, language: str) -> str:
        return self.labels.get(language) if self.labels else self.name

    def accepts(self, value: Number) -> bool:
        """The command check of a consumer: within the published limits (the agent checks again)."""
        if self.kind == "action":
            return self.value is None or value == self.value
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)


class AlarmGroupInfo(WireModel):
    """An alarm or warning group and the labels of its named bits; a bit not listed has no name."""

    name: str
    kind: Literal["alarm", "warning"]
    latched: bool = False
    labels: dict[int, Labels] = Field(default_factory=dict)


PROFILE_VERSION = 2


class ProfileSummary(WireModel):
    """The profile a farm publishes in ``meta``.

    Version 1 had only ``name``, ``values``, ``writable`` and ``units``, which are kept as they were.
    Version 2 adds ``value_info``, ``writable_info`` and ``alarm_groups``: what a page needs to show
    the farm's values and controls and to check a command, so that no consumer needs the profile file.
    """

    version: int = 1
    name: str
    values: list[str]
    writable: list[str] = Field(default_factory=list)
    units: dict[str, str] = Field(default_factory=dict)
    value_info: list[ValueInfo] = Field(default_factory=list)
    writable_info: list[WritableInfo] = Field(default_factory=list)
    alarm_groups: list[AlarmGroupInfo] = Field(default_factory=list)


class Meta(WireModel):
    """``{base}/farms/{farm}/meta``, retained: who the farm is and what it can do."""

    farm_id: str
    name: str
    owner_id: str | None = None
    site: str | None = None  # the site (farm) this house belongs to; houses of one agent share it
    location: str | None = None
    capabilities: list[str] = Field(default_factory=list)
    device: DeviceInfo
    agent_version: str
    poll_interval_s: float
    tailnet_hostname: str | None = None
    tailnet_ip: str | None = None
    profile: ProfileSummary
    ts: Timestamp


class SmsStatus(WireModel):
    """The farm's own SMS modem (``sms.device``): in the heartbeat and the agent's ``/health``."""

    device: str
    ok: bool  # the modem answered its last check or message
    error: str | None = None  # why not, or "not registered on a network"
    registered: bool | None = None
    network: str | None = None  # the operator, e.g. "250 01"
    signal_percent: int | None = Field(None, ge=0, le=100)
    last_sms: Timestamp | None = None
    sent: int = 0  # messages sent since the agent started
    failed: int = 0  # messages that reached no number
    held_back: bool = False  # a message waits for the hourly limit
    cut_off_since: Timestamp | None = None  # monitoring has not heard the farm since then


class Heartbeat(WireModel):
    """``{base}/farms/{farm}/heartbeat``, retained, every heartbeat interval."""

    ts: Timestamp
    uptime_s: float
    polls_ok: int
    polls_failed: int
    modbus: Literal["ok", "error"]
    backlog: int = 0  # readings queued on disk, not yet confirmed by the history
    dropped: int = 0  # readings the backlog's bounds dropped, ever
    bytes_per_hour: int | None = None
    storage_error: str | None = None  # set while the agent's data dir refuses writes: readings wait in memory
    in_memory: int | None = None  # readings held in memory meanwhile (of ``backlog``)
    sms: SmsStatus | None = None  # only from an agent with a modem
    # the newest poll cycle of the controller's bus (every unit on its link, once), against its bound
    cycle_s: float | None = None  # how long the cycle took
    cycle_wire_s: float | None = None  # what its frames take on the line at its baud rate: the cycle's floor
    bus_units: int | None = None  # controllers polled in the cycle
    overrun: bool | None = None  # true while the cycle takes longer than the poll interval: polls come late
    # the oldest seq the agent still holds (its next seq when it holds none): every reading below it is
    # either stored by the history or was dropped by the backlog's bounds, so the history need not wait for it
    held_from: int | None = Field(None, ge=0, lt=2**63)


class Reading(WireModel):
    """One poll of the controller: ``state`` (retained, newest) and ``backlog`` (replayed)."""

    ts: Timestamp
    seq: int = Field(ge=0, lt=2**63)  # SQLite INTEGER, where the history keeps it
    values: dict[str, Number | None]
    # the statuses that are not ok: a value not listed is ok (agents before sites listed every value)
    status: dict[str, SensorStatus] = Field(default_factory=dict)
    bits: dict[str, dict[str, bool]] | None = None  # labelled bits of bitfield values

    @field_validator("values")
    @classmethod
    def _finite(cls, values: dict[str, Number | None]) -> dict[str, Number | None]:
        for name, value in values.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"value {name!r} is not a finite number")
        return values


class Committed(WireModel):
    """``{base}/discovery/committed/{farm}``, retained, from the discovery node: every reading of the farm
    numbered ``seq`` or lower is stored in the history (or is one the farm said it no longer holds).

    Published after a commit that moved it (at most once per farm per commit), and again on every
    connect of the discovery node. The agent keeps a reading until a mark covers it."""

    seq: int = Field(ge=0, lt=2**63)


class AlarmItem(WireModel):
    """One raised bit. ``label`` is the English text (or "alarm bit N"), kept for older consumers;
    ``labels`` is set only for a bit the profile names: an unnamed bit is said from its number."""

    bit: int = Field(ge=0, le=63)
    label: str
    labels: Labels | None = None


class Alarms(WireModel):
    """``{base}/farms/{farm}/alarms``, retained: decoded alarm and warning groups."""

    ts: Timestamp
    active: list[AlarmItem] = Field(default_factory=list)
    latched: list[AlarmItem] = Field(default_factory=list)
    warnings: list[AlarmItem] = Field(default_factory=list)
    latched_warnings: list[AlarmItem] = Field(default_factory=list)


class Event(WireModel):
    """``{base}/farms/{farm}/events``, not retained: something happened on the farm."""

    ts: Timestamp
    kind: str
    message: str
    detail: dict[str, Any] = Field(default_factory=dict)


class SetCommand(WireModel):
    """``{base}/farms/{farm}/set/{name}``: a plain value or ``{"value", "id"}``."""

    # strict: "1" or true are not numbers; NaN and infinity are not values a register can hold
    value: StrictInt | StrictFloat = Field(allow_inf_nan=False)
    id: str = Field(default_factory=lambda: uuid.uuid4().hex, min_length=1, max_length=128)
    ts: Timestamp | None = None  # when the command was issued, for refusing stale ones


class Ack(WireModel):
    """``{base}/farms/{farm}/ack``: one for every command, accepted or refused."""

    id: str
    name: str
    value: Any = None
    ok: bool
    error: str | None = None
    ts: Timestamp


AlertSeverity = Literal["critical", "warning"]
AlertState = Literal["open", "acknowledged", "cleared"]


class AlertItem(WireModel):
    """One alert of a farm, as ``GET /api/alerts`` lists it and ``{base}/alerts/{farm}`` publishes it."""

    id: str
    farm_id: str
    kind: str
    severity: AlertSeverity
    state: AlertState
    opened: Timestamp
    since: Timestamp | None = None  # when the condition began, before the alert delay
    acknowledged_by: str | None = None
    acknowledged: Timestamp | None = None
    cleared: Timestamp | None = None
    message: str
    value: Number | None = None
    subject: str | None = None  # what the kind is about: the bit's label, the rule's name, the sensor, the reason


class FarmAlerts(WireModel):
    """``{base}/alerts/{farm}``, retained, published by the discovery node: the farm's alerts not yet cleared."""

    farm_id: str
    ts: Timestamp
    alerts: list[AlertItem] = Field(default_factory=list)


class AlertAck(WireModel):
    """``{base}/alerts/{farm}/ack``, from an operator: acknowledge one alert, or every open one of the farm."""

    id: str | None = Field(None, min_length=1, max_length=64)
    by: str = Field(min_length=1, max_length=64)
    ts: Timestamp | None = None


class PayloadError(ValueError):
    """A payload that is not valid JSON or does not fit its model; the message says why."""


M = TypeVar("M", bound=BaseModel)


def encode(model: BaseModel) -> bytes:
    return model.model_dump_json(exclude_none=True).encode()


def decode(model: type[M], payload: bytes | bytearray | str) -> M:
    """Parse and validate a payload, or raise :class:`PayloadError` with a short reason."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise PayloadError(f"payload of {len(payload)} bytes is larger than {MAX_PAYLOAD_BYTES}")
    try:
        return model.model_validate_json(payload)
    except ValidationError as exc:
        raise PayloadError(_first_error(exc)) from None


def decode_set_command(payload: bytes | bytearray | str) -> SetCommand:
    """A set payload is either a bare JSON number or an object with ``value`` and ``id``."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise PayloadError("payload too large")
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        raise PayloadError("not JSON") from None
    if isinstance(data, int | float) and not isinstance(data, bool):
        data = {"value": data}
    if not isinstance(data, dict):
        raise PayloadError("expected a number or an object with 'value'")
    try:
        return SetCommand.model_validate(data)
    except ValidationError as exc:
        raise PayloadError(_first_error(exc)) from None
    except OverflowError:  # an integer too large for a float, met by the finiteness check
        raise PayloadError("value: number too large") from None


def _first_error(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in error.get("loc", ())) or "payload"
    return f"{where}: {error.get('msg', 'invalid')}"
