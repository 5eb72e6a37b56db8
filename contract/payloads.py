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
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_ts(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


Timestamp = Annotated[datetime, PlainSerializer(format_ts, return_type=str, when_used="always")]
SensorStatus = Literal["ok", "pending", "break", "error", "disabled"]
Number = int | float


class WireModel(BaseModel):
    """Base of all payloads: unknown keys from newer peers are ignored, not fatal."""

    model_config = ConfigDict(extra="ignore")

    @field_validator("ts", mode="after", check_fields=False)
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)


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


class ProfileSummary(WireModel):
    name: str
    values: list[str]
    writable: list[str] = Field(default_factory=list)
    units: dict[str, str] = Field(default_factory=dict)


class Meta(WireModel):
    """``{base}/farms/{farm}/meta``, retained: who the farm is and what it can do."""

    farm_id: str
    name: str
    owner_id: str | None = None
    location: str | None = None
    capabilities: list[str] = Field(default_factory=list)
    device: DeviceInfo
    agent_version: str
    poll_interval_s: float
    tailnet_hostname: str | None = None
    tailnet_ip: str | None = None
    profile: ProfileSummary
    ts: Timestamp


class Heartbeat(WireModel):
    """``{base}/farms/{farm}/heartbeat``, retained, every heartbeat interval."""

    ts: Timestamp
    uptime_s: float
    polls_ok: int
    polls_failed: int
    modbus: Literal["ok", "error"]
    backlog: int = 0  # readings queued on disk, not yet acknowledged by the broker
    dropped: int = 0  # readings the backlog's bounds dropped, ever
    bytes_per_hour: int | None = None
    storage_error: str | None = None  # set while the agent's data dir refuses writes: readings wait in memory
    in_memory: int | None = None  # readings held in memory meanwhile (of ``backlog``)


class Reading(WireModel):
    """One poll of the controller: ``state`` (retained, newest) and ``backlog`` (replayed)."""

    ts: Timestamp
    seq: int = Field(ge=0, lt=2**63)  # SQLite INTEGER, where the history keeps it
    values: dict[str, Number | None]
    status: dict[str, SensorStatus] = Field(default_factory=dict)
    bits: dict[str, dict[str, bool]] | None = None  # labelled bits of bitfield values

    @field_validator("values")
    @classmethod
    def _finite(cls, values: dict[str, Number | None]) -> dict[str, Number | None]:
        for name, value in values.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"value {name!r} is not a finite number")
        return values


class AlarmItem(WireModel):
    bit: int = Field(ge=0, le=63)
    label: str


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
