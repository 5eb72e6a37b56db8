"""The farm list and the farm page, rendered from the bridge's views and each farm's published profile."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from flask import Blueprint, Response, abort, current_app, jsonify, redirect, render_template, request, url_for
from flask_babel import get_locale, lazy_gettext
from flask_babel import gettext as _
from pydantic import ValidationError
from werkzeug.wrappers import Response as WerkzeugResponse

from common.identities import StoreError
from contract.payloads import AlertAck, Event, Labels, ProfileSummary, SetCommand, ValueInfo, encode, utc_now
from contract.topics import InvalidTopic, check_farm_id
from mobile_web.auth import current_user, login_required, store
from mobile_web.bridge import FarmBridge, FarmView
from mobile_web.farm_profile import (
    bit_labels,
    main_value,
    names_bits,
    value_info,
    value_infos,
    writable_info,
    writable_infos,
)

bp = Blueprint("farms", __name__)
# the KUB-1063 profile's enum option names, so the catalog translates them (other profiles show theirs as is)
ENUM_OPTION_NAMES = (lazy_gettext("base"), lazy_gettext("tunnel"))
UNIT_NAMES = (lazy_gettext("min"), lazy_gettext("Pa"))  # the KUB-1063 profile's units said differently in Russian
BY_EXCEPTION_GRACE_S = 120.0


def bridge() -> FarmBridge:
    return cast(FarmBridge, current_app.extensions["kubmesh.bridge"])


def profile_of(view: FarmView) -> ProfileSummary | None:
    return view.meta.profile if view.meta else None


@dataclass(frozen=True)
class Row:
    """One value on the farm page."""

    name: str
    label: str
    unit: str
    value: Any
    status: str
    decimals: int | None
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


def unnamed_bit(kind: str, bit: int) -> str:
    return _("alarm bit %(bit)s", bit=bit) if kind == "alarm" else _("warning bit %(bit)s", bit=bit)


def alarm_text(view: FarmView, kind: str, bit: int, label: str, labels: Labels | None) -> str:
    """A raised bit in the page's language: its labels, or for an unnamed bit its number.

    The English ``label`` is shown as is only for an agent whose profile predates named bits.
    """
    if labels is not None:
        return labels.get(language())
    return unnamed_bit(kind, bit) if names_bits(profile_of(view)) else label


def alarm_labels(view: FarmView) -> dict[str, dict[int, str]]:
    """Each kind's named bits in the page's language, for the page's live event texts."""
    profile = profile_of(view)
    groups = profile.alarm_groups if profile else []
    return {kind: {bit: labels.get(language()) for group in groups if group.kind == kind
                   for bit, labels in group.labels.items()} for kind in ("alarm", "warning")}


def event_texts() -> dict[str, str]:
    return {kind: str(text) for kind, text in EVENT_TEXTS.items()}


def event_text(view: FarmView, event: Event) -> str:
    template = EVENT_TEXTS.get(event.kind)
    if template is None:
        return event.message
    detail = {key: str(value) for key, value in event.detail.items()}
    bit = event.detail.get("bit")
    if event.kind.startswith(("alarm_", "warning_")) and isinstance(bit, int) and not isinstance(bit, bool):
        kind = event.kind.split("_")[0]
        labels = bit_labels(profile_of(view), kind, bit)
        detail["label"] = alarm_text(view, kind, bit, detail.get("label", ""), labels)
    if event.kind == "sensor_status":
        info = value_info(profile_of(view), detail.get("name", ""))
        detail["name"] = info.label(language()) if info else detail.get("name", "")
        for key in ("from", "to"):
            detail[key] = str(SENSOR_STATUS_TEXTS.get(detail.get(key, ""), detail.get(key, "")))
    return re.sub(r"\{(\w+)\}", lambda match: detail.get(match.group(1), match.group(0)), str(template))


def language() -> str:
    return str(get_locale() or "en")


def value_rows(view: FarmView) -> list[Row]:
    """The farm's values as its profile says to show them (bit fields have no single reading to show)."""
    rows: list[Row] = []
    state = view.state
    for info in value_infos(profile_of(view), state):
        if info.kind == "bitfield":
            continue
        value = state.values.get(info.name) if state else None
        status = state.status.get(info.name, "ok") if state else "pending"
        options = {str(raw): translated(label) for raw, label in info.options.items()}
        rows.append(Row(info.name, info.label(language()), unit_text(info.unit), display(info, value), status,
                        info.decimals, options))
    return rows


def translated(text: str) -> str:
    """A word a farm publishes (a unit, an enum option), in the page's language when the catalog has it.

    An empty text stays empty: gettext("") would answer the catalog's header.
    """
    return _(text) if text else text


def unit_text(unit: str | None) -> str:
    return translated(unit or "")


def display(info: ValueInfo | None, value: Any) -> Any:
    if value is None or info is None:
        return value
    if info.kind == "enum" and isinstance(value, int):
        label = info.options.get(value)
        return translated(label) if label else value
    if info.decimals is None or not isinstance(value, float):
        return value
    return f"{value:.{info.decimals}f}"


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


def chartable(view: FarmView, name: str) -> ValueInfo | None:
    """The value, if the history chart can draw it: a number of the farm's profile (enums and bit fields have
    no line)."""
    info = value_info(profile_of(view), name)
    return info if info is not None and info.kind == "number" else None


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


def by_site(views: list[FarmView]) -> list[tuple[str | None, list[FarmView]]]:
    """The farms grouped by the site their meta names, each group in the order of its first farm; farms without
    a site together, last."""
    groups: dict[str | None, list[FarmView]] = {}
    for view in views:
        groups.setdefault(view.meta.site if view.meta else None, []).append(view)
    return sorted(groups.items(), key=lambda group: group[0] is None)


def card_helpers() -> dict[str, Any]:
    """What a farm's card in the list is rendered with (``_farm_card.html``)."""
    return {"is_stale": is_stale, "main_value": main_value, "profile_of": profile_of, "display": display,
            "unit_text": unit_text, "two_polls": two_polls, "heartbeat_ok": heartbeat_ok,
            "grace": BY_EXCEPTION_GRACE_S}


@bp.get("/")
@login_required
def index() -> str:
    since = bridge().hub.last_id()  # taken before the views: what changes after it reaches the page's stream
    views = visible_views()
    return render_template("farms.html", views=views, sites=by_site(views), since=since, **card_helpers())


@bp.get("/farms/<farm_id>/card")
@login_required
def card(farm_id: str) -> str:
    """One farm's card, for a list page that is told of a farm it does not show yet (or whose name changed)."""
    return render_template("_farm_card.html", view=visible_view(farm_id), **card_helpers())


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
    writable = writable_info(profile_of(view), body["name"])
    if writable is None:
        return _json_error(400, _("This value cannot be set."))
    value = body.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _json_error(400, _("The value must be a number."))
    if not writable.accepts(value):
        if writable.kind == "action":
            return _json_error(400, _("This command sends only %(value)s.", value=writable.value))
        return _json_error(400, _("The value must be between %(min)s and %(max)s.", min=writable.min,
                                  max=writable.max))
    try:
        command = SetCommand(value=value, ts=utc_now())
    except (ValidationError, OverflowError):  # not finite, or an integer beyond any float
        return _json_error(400, _("The value must be a number."))
    if not bridge().publish_command(view.farm_id, body["name"], encode(command)):
        return _json_error(503, _("Not connected to the broker."))
    current_app.logger.info("%s sent %s=%s to %s (%s)", user.username, body["name"], value, farm_id, command.id)
    return jsonify(id=command.id), 202


@bp.post("/farms/<farm_id>/alerts/ack")
@login_required
def acknowledge_alerts(farm_id: str) -> WerkzeugResponse:
    """One tap: the farm's open alerts (or the one named) acknowledged for the user, over MQTT; the discovery
    node records who, stops the reminders, and publishes the alerts again."""
    view = visible_view(farm_id)
    user = current_user()
    if user is None or not user.may_command:
        abort(403)
    alert_id = request.form.get("alert") or None
    if alert_id is not None and not re.fullmatch(r"[0-9a-f]{1,64}", alert_id):
        abort(400)
    payload = encode(AlertAck(id=alert_id, by=user.username, ts=utc_now()))
    if not bridge().publish_alert_ack(view.farm_id, payload):
        abort(503)
    current_app.logger.info("%s acknowledged %s of %s", user.username, alert_id or "every alert", farm_id)
    if request.form.get("back") == "alerts":
        return redirect(url_for("alerts.alerts"))
    return redirect(url_for("farms.farm", farm_id=view.farm_id))


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
        writable=writable_infos(profile_of(view)) if user.may_command else [], language=language(),
        chart_rows=[row for row in rows if chartable(view, row.name)], unit_text=unit_text,
        two_polls=two_polls(view), heartbeat_ok=heartbeat_ok(view), grace=BY_EXCEPTION_GRACE_S,
        event_text=event_text, event_texts=event_texts(), alarm_text=alarm_text, alarm_kinds=ALARM_KINDS,
        alarm_labels=alarm_labels(view), names_bits=names_bits(profile_of(view)), status_texts=SENSOR_STATUS_TEXTS,
        export_from=utc_now().date() - timedelta(days=1), export_to=utc_now().date(),
    )
