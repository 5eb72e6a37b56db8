"""``/farms/{farm}/history``: one value's history for the farm page's chart, from the discovery node;
``/farms/{farm}/history.csv``: chosen values over chosen days, as a spreadsheet in the user's time zone.

The browser never talks to the discovery API: this route asks it server-side
with the mobile web's own bearer token (``DISCOVERY_SERVICE_URL`` and
``DISCOVERY_API_TOKEN``), after checking that the user may see the farm, and
answers with the points the chart draws. Under gevent the request to the
discovery node waits cooperatively, so a slow API holds no other page up.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.parse
import urllib.request
from datetime import date, datetime, time, timedelta
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from flask_babel import gettext as _

from common.history_csv import BadTimeZone, history_csv, time_zone
from contract.payloads import format_ts, utc_now
from contract.rest import History
from mobile_web.auth import login_required
from mobile_web.discovery_api import DiscoveryUnavailable, get_answer
from mobile_web.farms import chartable, language, unit_text, visible_view

log = logging.getLogger("kubmesh.web.history")
bp = Blueprint("history", __name__)

# range → (span, bucket): about a hundred points either way, few enough for a phone on a weak signal
RANGES: dict[str, tuple[timedelta, timedelta]] = {
    "24h": (timedelta(hours=24), timedelta(minutes=15)),
    "7d": (timedelta(days=7), timedelta(hours=2)),
}
EXPORT_MAX_DAYS = 31
RAW_EXPORT = timedelta(days=7)  # the discovery API's longest raw span: a longer export is in hourly averages
EXPORT_STEP = timedelta(hours=1)
DECIMAL_MARKS = {"ru": ","}  # the page language's decimal mark; "." otherwise
CHART_DECIMALS = 2  # for a value whose profile does not say its decimals (an agent older than profile version 2)


class HistoryUnavailable(DiscoveryUnavailable):
    """The discovery node could not be asked, or answered something unusable."""


def fetch_history(base_url: str, token: str | None, farm_id: str, name: str, start: datetime, end: datetime,
                  step: timedelta | None) -> History:
    fields: dict[str, str | int] = {"name": name, "from": format_ts(start), "to": format_ts(end)}
    if step is not None:
        fields["step"] = int(step.total_seconds())
    query = urllib.parse.urlencode(fields)
    path = f"/api/farms/{urllib.parse.quote(farm_id)}/history?{query}"
    return get_answer(base_url, token, path, History, "history", HistoryUnavailable)


def _error(status: int, message: str) -> tuple[Response, int]:
    return jsonify(error=message), status


@bp.get("/farms/<farm_id>/history")
@login_required
def history(farm_id: str) -> tuple[Response, int]:
    view = visible_view(farm_id)
    name = request.args.get("name", "")
    range_ = request.args.get("range", "24h")
    info = chartable(view, name)
    if info is None:
        return _error(400, _("There is no chart for this value."))
    if range_ not in RANGES:
        return _error(400, _("The range must be 24h or 7d."))
    base_url = current_app.config.get("DISCOVERY_URL")
    if not base_url:
        return _error(503, _("History is not configured on this server."))
    span, bucket = RANGES[range_]
    now = utc_now()
    try:
        found = fetch_history(base_url, current_app.config.get("DISCOVERY_TOKEN"), view.farm_id, name, now - span,
                              now, bucket)
    except HistoryUnavailable as exc:
        log.warning("farm %s: history of %s not available: %s", view.farm_id, name, exc)
        return _error(502, _("History is not available right now."))
    points: list[dict[str, Any]] = [p.model_dump(mode="json") for p in found.points if p.value is not None]
    return jsonify(farm=view.farm_id, name=name, range=range_, unit=unit_text(info.unit),
                   decimals=CHART_DECIMALS if info.decimals is None else info.decimals, points=points), 200


@bp.get("/farms/<farm_id>/history.csv")
@login_required
def export(farm_id: str) -> Response | tuple[Response, int]:
    """``name`` (repeated), ``from`` and ``to`` (days, both included), ``tz`` (the browser's time zone).

    The file's decimal mark is the page language's (``,`` in Russian, with ``;`` between fields, as
    Excel reads it there; ``.`` and ``,`` in English); its times are in ``tz``.
    """
    view = visible_view(farm_id)
    names = list(dict.fromkeys(request.args.getlist("name")))
    infos = {name: chartable(view, name) for name in names}
    if not names or None in infos.values():
        return _error(400, _("Choose the values to export."))
    try:
        zone = time_zone(request.args.get("tz") or "UTC")
        first, last = date.fromisoformat(request.args["from"]), date.fromisoformat(request.args["to"])
    except (BadTimeZone, KeyError, ValueError):
        return _error(400, _("Choose the days and the time zone of the export."))
    if not 0 <= (last - first).days < EXPORT_MAX_DAYS:
        return _error(400, _("The export covers 1 to %(days)s days.", days=EXPORT_MAX_DAYS))
    base_url = current_app.config.get("DISCOVERY_URL")
    if not base_url:
        return _error(503, _("History is not configured on this server."))
    start = datetime.combine(first, time(), zone)
    end = datetime.combine(last + timedelta(days=1), time(), zone)
    step = None if end - start <= RAW_EXPORT else EXPORT_STEP
    try:
        series = {name: [(p.ts, p.value) for p in fetch_history(
            base_url, current_app.config.get("DISCOVERY_TOKEN"), view.farm_id, name, start, end, step).points]
            for name in names}
    except HistoryUnavailable as exc:
        log.warning("farm %s: history for an export not available: %s", view.farm_id, exc)
        return _error(502, _("History is not available right now."))
    headers = {name: f"{info.label(language())}, {unit_text(info.unit)}" if info.unit else info.label(language())
               for name, info in infos.items() if info is not None}
    decimals = {name: info.decimals for name, info in infos.items() if info is not None and info.decimals is not None}
    body = history_csv(series, zone, headers=headers, decimals=decimals,
                       decimal="," if DECIMAL_MARKS.get(language()) == "," else ".", time_header=_("time"))
    filename = f"{view.farm_id}-{first.isoformat()}-{last.isoformat()}.csv"
    return Response(body, mimetype="text/csv", headers={"Content-Disposition": f'attachment; filename="{filename}"'})
