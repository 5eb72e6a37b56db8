"""The discovery node's REST API as models: what each route accepts and what it answers.

Requests: every route's path and query parameters are one model (:class:`FarmPath`, :class:`FarmsQuery`,
:class:`HistoryQuery`, :class:`CommandsQuery`) whose validation is the only check the API makes; a value
that does not fit answers 400 with the model's ``problem`` and the reason. Answers: the models below,
serialised without the fields left unset. ``discovery/openapi.yaml`` holds their JSON Schemas
(:func:`rest_schemas`), checked against them by the tests; a client (the web) imports them from here.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic.json_schema import models_json_schema

from contract.payloads import AlertItem, Timestamp, parse_ts
from contract.topics import InvalidTopic, check_farm_id, check_value_name

DEFAULT_HISTORY_SPAN = timedelta(days=1)
MAX_RAW_SPAN = timedelta(days=7)  # longer spans need a step
MAX_BUCKETS = 10_000
MAX_STEP_S = 366 * 86400
STEP_PATTERN = re.compile(r"(\d{1,12}(?:\.\d{1,6})?)([smhd]?)")
STEP_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
ASCII_DIGITS = re.compile(r"[0-9]{1,9}")


# ---- parameter types ------------------------------------------------------------------------------------


def _farm_id(text: str) -> str:
    try:
        return check_farm_id(text)
    except InvalidTopic as exc:
        raise ValueError(str(exc)) from None


def _value_name(text: str) -> str:
    try:
        return check_value_name(text)
    except InvalidTopic as exc:
        raise ValueError(str(exc)) from None


def _utc_moment(value: Any) -> datetime:
    """An ISO-8601 time that exists in UTC (9999-12-31T23:59:59-14:00 does not)."""
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = parse_ts(str(value))
        except ValueError:
            raise ValueError(f"an ISO-8601 time such as 2026-11-24T21:05:00Z, not {value!r}") from None
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{value!r} is outside the years 1 to 9999 in UTC") from None


def _ascii_int(value: Any) -> Any:
    """A whole number written with the digits 0-9 only (int() would take other scripts' digits)."""
    if isinstance(value, str) and not ASCII_DIGITS.fullmatch(value):
        raise ValueError(f"a whole number written with the digits 0-9, not {value!r}")
    return value


def _step(value: Any) -> float:
    match = STEP_PATTERN.fullmatch(str(value))
    if not match:
        raise ValueError(f"seconds or a number with s, m, h or d (5m, 1h), not {value!r}")
    step = float(match[1]) * STEP_UNITS[match[2]]
    if not 1 <= step <= MAX_STEP_S:
        raise ValueError("between 1 s and 366 days")
    return step


FarmId = Annotated[str, AfterValidator(_farm_id)]
ValueName = Annotated[str, AfterValidator(_value_name)]
UtcMoment = Annotated[datetime, BeforeValidator(_utc_moment)]
Step = Annotated[float, BeforeValidator(_step)]


class Parameters(BaseModel):
    """The parameters of one route; ``problem`` is the 400's ``error`` when they do not validate."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)
    problem: ClassVar[str] = "invalid parameter"

    @model_validator(mode="before")
    @classmethod
    def _empty_is_absent(cls, values: Any) -> Any:
        """``?from=&to=`` (a form's empty fields) means the defaults, as if they were not given."""
        if isinstance(values, dict):
            return {key: value for key, value in values.items() if value != ""}
        return values


class FarmPath(Parameters):
    problem: ClassVar[str] = "invalid farm id"
    farm: FarmId


class FarmsQuery(Parameters):
    problem: ClassVar[str] = "invalid owner"
    owner: str | None = Field(None, min_length=1, max_length=128)


class CommandsQuery(Parameters):
    problem: ClassVar[str] = "invalid limit"
    limit: Annotated[int, BeforeValidator(_ascii_int), Field(ge=1, le=1000)] = 100


class HistoryQuery(Parameters):
    """``name`` (required), ``from``/``to`` (ISO-8601; the last day by default), ``step`` (seconds or 5m, 1h, 1d)."""

    problem: ClassVar[str] = "invalid history query"
    name: ValueName = Field(description="the value to chart, e.g. name=temp_inside")
    start: UtcMoment | None = Field(None, alias="from")
    end: UtcMoment | None = Field(None, alias="to")
    step: Step | None = None

    @model_validator(mode="after")
    def _span(self) -> HistoryQuery:
        end = self.end or datetime.now(UTC)
        try:
            start = self.start or end - DEFAULT_HISTORY_SPAN
        except OverflowError:
            raise ValueError("to is too early for the default span of a day: give from") from None
        if start > end:
            raise ValueError("from is after to")
        if self.step is None and end - start > MAX_RAW_SPAN:
            raise ValueError(f"a span longer than {MAX_RAW_SPAN.days} days needs a step, e.g. step=1h")
        if self.step is not None and (end - start).total_seconds() / self.step > MAX_BUCKETS:
            raise ValueError(f"more than {MAX_BUCKETS} buckets: choose a larger step")
        object.__setattr__(self, "start", start)  # frozen: the defaults filled in once, here
        object.__setattr__(self, "end", end)
        return self

    def span(self) -> tuple[datetime, datetime]:
        assert self.start is not None and self.end is not None  # filled by the validator
        return self.start, self.end


class AlertsQuery(Parameters):
    """``farm`` (default every farm the caller sees), ``state``: ``open`` (not cleared yet) or ``all``."""

    problem: ClassVar[str] = "invalid alerts query"
    farm: FarmId | None = None
    state: Literal["open", "all"] = "open"


class AlertPath(Parameters):
    problem: ClassVar[str] = "invalid alert id"
    id: str = Field(min_length=1, max_length=64, pattern=r"^[0-9a-f]+$")


USERNAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"  # as common.identities checks it
CLOCK_PATTERN = r"^([01]\d|2[0-3]):[0-5]\d$"
AlertLevel = Literal["critical", "warning"]


class UserPath(Parameters):
    problem: ClassVar[str] = "invalid username"
    user: str = Field(pattern=USERNAME_PATTERN)


class ChannelQuery(Parameters):
    """The channel to remove: its URL as stored or as listed (a Web Push channel is listed without its keys)."""

    problem: ClassVar[str] = "invalid channel"
    url: str = Field(min_length=1, max_length=4096)


class PushSubscription(Parameters):
    """A browser's push subscription (``PushSubscription.toJSON()``: endpoint and keys)."""

    endpoint: str = Field(min_length=1, max_length=2048, pattern=r"^https?://")
    p256dh: str = Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_-]+=*$")
    auth: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+=*$")


class ChannelBody(Parameters):
    """A channel to add: an Apprise ``url``, or a browser's ``webpush`` subscription (exactly one)."""

    problem: ClassVar[str] = "invalid channel"
    url: str | None = Field(None, min_length=1, max_length=4096)
    webpush: PushSubscription | None = None
    severity: AlertLevel = "warning"
    tier: Literal[1, 2] = 1

    @model_validator(mode="after")
    def _one(self) -> ChannelBody:
        if (self.url is None) == (self.webpush is None):
            raise ValueError("give url or webpush")
        return self


class PreferencesBody(Parameters):
    """The user's language, quiet hours (both or neither; null for none) and the lowest severity of all their
    channels; what is not given stays as it was."""

    problem: ClassVar[str] = "invalid notification settings"
    language: Literal["ru", "en"] | None = None
    quiet_start: str | None = Field(None, pattern=CLOCK_PATTERN)
    quiet_end: str | None = Field(None, pattern=CLOCK_PATTERN)
    severity: AlertLevel | None = None

    @model_validator(mode="after")
    def _both(self) -> PreferencesBody:
        if (self.quiet_start is None) != (self.quiet_end is None):
            raise ValueError("quiet hours need both quiet_start and quiet_end")
        return self


# ---- answers ------------------------------------------------------------------------------------------


class Answer(BaseModel):
    model_config = ConfigDict(populate_by_name=True)


class ErrorAnswer(Answer):
    error: str
    detail: str | None = None


class FarmSummary(Answer):
    farm_id: str
    name: str | None = None
    owner_id: str | None = None
    location: str | None = None
    online: bool
    status_ts: str | None = Field(None, json_schema_extra={"format": "date-time"})
    status_reason: str | None = None
    last_seen: str | None = Field(None, json_schema_extra={"format": "date-time"})
    heartbeat: dict[str, Any] | None = Field(None, description="the farm's last heartbeat payload")
    meta: dict[str, Any] | None = Field(None, description="the farm's meta payload")


class HistoryGaps(Answer):
    readings: int
    first_seq: int | None
    last_seq: int | None
    gaps: int = Field(description="runs of seq numbers missing from the history")
    missing: int = Field(description="seq numbers missing from the history")


class FarmDetail(FarmSummary):
    state: dict[str, Any] | None = Field(None, description="the newest reading, as on the state topic")
    alarms: dict[str, Any] | None = Field(None, description="as on the alarms topic")
    history: HistoryGaps


class FarmList(Answer):
    farms: list[FarmSummary]


class Point(Answer):
    """A reading; with ``step`` (or for a time already downsampled), a bucket's min, max, average and count."""

    model_config = ConfigDict(populate_by_name=True, allow_inf_nan=False)  # a chart's JSON has no Infinity

    ts: Timestamp
    value: int | float | None = Field(description="the reading, or the bucket's average")
    min: float | None = None
    max: float | None = None
    avg: float | None = None
    count: int | None = None


class History(Answer):
    farm: str
    name: str
    start: Timestamp = Field(alias="from")
    end: Timestamp = Field(alias="to")
    step: float | None = None
    points: list[Point] = Field(description="oldest first")


class Command(Answer):
    id: str
    name: str
    value: int | float | None = None
    sent: str | None = Field(None, json_schema_extra={"format": "date-time"})
    acknowledged: str | None = Field(None, json_schema_extra={"format": "date-time"})
    ok: bool | None = None
    error: str | None = None


class CommandList(Answer):
    farm: str
    commands: list[Command]


class TailnetDevices(Answer):
    tailnet: str | None = None
    source: str | None = None
    synced_at: str | None = Field(None, json_schema_extra={"format": "date-time"})
    error: str | None = None
    devices: list[dict[str, Any]]
    farms: dict[str, Any]


class Health(Answer):
    model_config = ConfigDict(extra="allow")  # the broker link, the tailnet sync, the extensions

    status: Literal["ok", "degraded"]
    database: str
    farms: int


class AlertList(Answer):
    alerts: list[AlertItem] = Field(description="newest first")


class AlertAnswer(Answer):
    alert: AlertItem


class ChannelState(Answer):
    url: str = Field(description="as listed: a Web Push channel without its keys")
    webpush: bool
    severity: AlertLevel = Field(description="the lowest severity sent to it")
    tier: int
    state: Literal["ok", "failing"]
    failures: int = Field(description="consecutive failed deliveries")
    last_error: str | None = None


class NotifySettings(Answer):
    username: str
    language: Literal["ru", "en"]
    quiet_start: str | None = None
    quiet_end: str | None = None
    channels: list[ChannelState]
    webpush_key: str | None = Field(None, description="the node's VAPID public key: the applicationServerKey")


class ChannelTest(Answer):
    url: str
    ok: bool
    error: str | None = None


class NotifyTest(Answer):
    results: list[ChannelTest]


ANSWERS: tuple[type[Answer], ...] = (ErrorAnswer, FarmList, FarmDetail, History, CommandList, TailnetDevices, Health,
                                     AlertList, AlertAnswer, NotifySettings, NotifyTest)


def rest_schemas() -> dict[str, Any]:
    """The JSON Schema of every answer, as ``components/schemas`` of an OpenAPI 3.1 document."""
    _, top = models_json_schema([(model, "serialization") for model in ANSWERS],
                                ref_template="#/components/schemas/{model}")
    schemas: dict[str, Any] = top["$defs"]
    return schemas
