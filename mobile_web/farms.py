"""The farm list and the farm page, rendered from the bridge's views and the device profile."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, cast

from flask import Blueprint, Response, abort, current_app, jsonify, render_template, request
from flask_babel import get_locale, lazy_gettext
from flask_babel import gettext as _

from common.identities import StoreError
from contract.payloads import Event, SetCommand, encode, utc_now
from contract.topics import InvalidTopic, check_farm_id
from farm_agent.profile import Profile, ValueSpec
from mobile_web.auth import current_user, login_required, store
from mobile_web.bridge import FarmBridge, FarmView

bp = Blueprint("farms", __name__)
# the shipped profile's enum option names, so the catalog translates them (other profiles show theirs as is)
ENUM_OPTION_NAMES = (lazy_gettext("base"), lazy_gettext("tunnel"))
UNIT_NAMES = (lazy_gettext("min"), lazy_gettext("Pa"))  # the shipped profile's units said differently in Russian
BY_EXCEPTION_GRACE_S = 120.0
CHARTABLE_TYPES = ("u16", "s16")  # numbers; enums and bit fields have no line to draw


def bridge() -> FarmBridge:
    return cast(FarmBridge, current_app.extensions["kubmesh.bridge"])


def profile() -> Profile:
    return cast(Profile, current_app.extensions["kubmesh.profile"])


@dataclass(frozen=True)
class Row:
    """One value on the farm page."""

    name: str
    label: str
    unit: str
    value: Any
    status: str
    decimals: int
    options: dict[str, str]  # enum raw value → label, for the page's live updates


# the agent's events, said in the page's language; {names} are filled from the event's detail (here and in app.js)
EVENT_TEXTS = {
    "alarm_raised": lazy_gettext("Alarm: {label}"),
    "alarm_cleared": lazy_gettext("Alarm cleared: {label}"),
    "warning_raised": lazy_gettext("Warning: {label}"),
    "warning_cleared": lazy_gettext("Warning cleared: {label}"),
    "sensor_status": lazy_gettext("{name}: {from} → {to}"),
    "command_applied": lazy_gettext("Set {name} = {value}"),
    "modbus_error": lazy_gettext("The controller does not answer"),
    "modbus_restored": lazy_gettext("The controller answers again"),
    "agent_online": lazy_gettext("The farm agent connected"),
    "agent_stopping": lazy_gettext("The farm agent is stopping"),
}
SENSOR_STATUS_TEXTS = {
    "ok": lazy_gettext("ok"),
    "pending": lazy_gettext("waiting for the sensor"),
    "break": lazy_gettext("sensor break"),
    "error": lazy_gettext("sensor error"),
    "disabled": lazy_gettext("sensor disabled"),
}
ALARM_KINDS = {"active": "alarm", "latched": "alarm", "warnings": "warning", "latched_warnings": "warning"}


def alarm_label(kind: str, bit: int, label: str) -> str:
    """A bit the profile gives no name arrives as "alarm bit N" (farm_agent.profile): said in the page's language."""
    if label == f"{kind} bit {bit}":
        return _("alarm bit %(bit)s", bit=bit) if kind == "alarm" else _("warning bit %(bit)s", bit=bit)
    return label


def event_texts() -> dict[str, str]:
    return {kind: str(text) for kind, text in EVENT_TEXTS.items()}


def event_text(event: Event) -> str:
    template = EVENT_TEXTS.get(event.kind)
    if template is None:
        return event.message
    detail = {key: str(value) for key, value in event.detail.items()}
    if event.kind.startswith(("alarm_", "warning_")) and "label" in detail and isinstance(event.detail.get("bit"), int):
        detail["label"] = alarm_label(event.kind.split("_")[0], event.detail["bit"], detail["label"])
    if event.kind == "sensor_status":
        spec = profile().values_by_name.get(detail.get("name", ""))
        detail["name"] = _label(spec) if spec else detail.get("name", "")
        for key in ("from", "to"):
            detail[key] = str(SENSOR_STATUS_TEXTS.get(detail.get(key, ""), detail.get(key, "")))
    return re.sub(r"\{(\w+)\}", lambda match: detail.get(match.group(1), match.group(0)), str(template))


def language() -> str:
    return str(get_locale() or "en")


def value_rows(view: FarmView) -> list[Row]:
    rows: list[Row] = []
    state = view.state
    for spec in profile().values:
        if spec.type == "bits16":
            continue
        value = state.values.get(spec.name) if state else None
        status = state.status.get(spec.name, "ok") if state else "pending"
        options = {str(raw): _(label) for raw, label in spec.options.items()}
        display = _display(spec, value)
        rows.append(Row(spec.name, _label(spec), _(spec.unit) if spec.unit else "", display, status, spec.decimals,
                        options))
    return rows


def _label(spec: ValueSpec) -> str:
    return spec.label.get(language()) if spec.label else spec.name


def _display(spec: ValueSpec, value: Any) -> Any:
    if value is None:
        return None
    if spec.type == "enum":
        label = spec.options.get(int(value))
        return _(label) if label else value
    return f"{value:.{spec.decimals}f}" if isinstance(value, float) else value


def two_polls(view: FarmView) -> float:
    return 2 * max(view.meta.poll_interval_s if view.meta else 0.0, current_app.config["POLL_INTERVAL"])


def heartbeat_ok(view: FarmView) -> bool:
    return view.heartbeat is not None and view.heartbeat.modbus == "ok"


def stale_after(view: FarmView) -> float:
    """Seconds after which a farm's values are stale: two poll intervals.

    An agent that reports by exception may leave ``state`` unchanged for a while when nothing moves;
    while its heartbeat says the controller answers, that is trusted for up to two minutes.
    (app.js applies the same rule to the live page.)
    """
    return max(two_polls(view), BY_EXCEPTION_GRACE_S) if heartbeat_ok(view) else two_polls(view)


def is_stale(view: FarmView) -> bool:
    """Values older than :func:`stale_after`, or from a farm that is offline, are not to be trusted."""
    if not view.online or view.state_received is None:
        return True
    latest = max(view.state_received, view.status_received or 0)
    return time.time() - latest > stale_after(view)


def chartable(name: str) -> bool:
    """A value the history chart can draw: a number (enums and bit fields have no line)."""
    spec = profile().values_by_name.get(name)
    return spec is not None and spec.type in CHARTABLE_TYPES


def owner_of(view: FarmView) -> str | None:
    """The owner given at ``kubmesh farm add`` when the farm has an identity here, else the one its agent declares."""
    try:
        return store().owner_of(view.farm_id, view.owner_id)
    except StoreError:
        return None


def visible_views() -> list[FarmView]:
    user = current_user()
    assert user is not None
    views = [v for v in bridge().views() if user.sees(owner_of(v))]
    return sorted(views, key=lambda v: (-v.alarm_count, not v.online, v.meta.name if v.meta else v.farm_id))


@bp.get("/")
@login_required
def index() -> str:
    views = visible_views()
    temp = profile().values_by_name.get("temp_inside")
    return render_template("farms.html", views=views, is_stale=is_stale, temp_spec=temp, display=_display,
                           two_polls=two_polls, heartbeat_ok=heartbeat_ok, grace=BY_EXCEPTION_GRACE_S)


def visible_view(farm_id: str) -> FarmView:
    try:
        check_farm_id(farm_id)
    except InvalidTopic:
        abort(404)
    view = bridge().view(farm_id)
    user = current_user()
    if view is None or user is None or not user.sees(owner_of(view)):
        abort(404)
    return view


def _json_error(status: int, message: str) -> tuple[Response, int]:
    return jsonify(error=message), status


@bp.post("/farms/<farm_id>/commands")
@login_required
def command(farm_id: str) -> tuple[Response, int]:
    """Send ``set/{name}`` for an operator; the agent validates it again and answers on ``ack``."""
    view = visible_view(farm_id)
    user = current_user()
    if user is None or not user.may_command:
        return _json_error(403, _("Your role may not send commands."))
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
        return _json_error(400, _("Expected {\"name\", \"value\"}."))
    if body["name"] not in profile().writable_by_name:
        return _json_error(400, _("This value cannot be set."))
    value = body.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _json_error(400, _("The value must be a number."))
    command = SetCommand(value=value, ts=utc_now())
    if not bridge().publish_command(view.farm_id, body["name"], encode(command)):
        return _json_error(503, _("Not connected to the broker."))
    current_app.logger.info("%s sent %s=%s to %s (%s)", user.username, body["name"], value, farm_id, command.id)
    return jsonify(id=command.id), 202


@bp.get("/farms/<farm_id>")
@login_required
def farm(farm_id: str) -> str:
    since = bridge().hub.last_id()  # taken before the view: what changes after it reaches the page's stream
    view = visible_view(farm_id)
    user = current_user()
    assert user is not None
    rows = value_rows(view)
    return render_template(
        "farm.html", view=view, since=since, rows=rows, stale=is_stale(view), user=user,
        writable=profile().writable if user.may_command else [], language=language(),
        chart_rows=[row for row in rows if chartable(row.name)],
        two_polls=two_polls(view), heartbeat_ok=heartbeat_ok(view), grace=BY_EXCEPTION_GRACE_S,
        event_text=event_text, event_texts=event_texts(), alarm_label=alarm_label, alarm_kinds=ALARM_KINDS,
        status_texts=SENSOR_STATUS_TEXTS,
    )
