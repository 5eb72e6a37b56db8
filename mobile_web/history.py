"""``/farms/{farm}/history``: one value's history for the farm page's chart, from the discovery node.

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
from datetime import timedelta
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from flask_babel import gettext as _
from pydantic import ValidationError

from contract.payloads import format_ts, utc_now
from contract.rest import History
from mobile_web.auth import login_required
from mobile_web.farms import chartable, unit_text, visible_view

log = logging.getLogger("kubmesh.web.history")
bp = Blueprint("history", __name__)

# range → (span, bucket): about a hundred points either way, few enough for a phone on a weak signal
RANGES: dict[str, tuple[timedelta, timedelta]] = {
    "24h": (timedelta(hours=24), timedelta(minutes=15)),
    "7d": (timedelta(days=7), timedelta(hours=2)),
}
TIMEOUT_S = 5.0
CHART_DECIMALS = 2  # for a value whose profile does not say its decimals (an agent older than profile version 2)
MAX_BODY = 2 * 1024 * 1024


class HistoryUnavailable(Exception):
    """The discovery node could not be asked, or answered something unusable."""


def fetch_history(base_url: str, token: str | None, farm_id: str, name: str, range_: str) -> History:
    span, bucket = RANGES[range_]
    now = utc_now()
    query = urllib.parse.urlencode({"name": name, "from": format_ts(now - span), "to": format_ts(now),
                                    "step": int(bucket.total_seconds())})
    url = f"{base_url.rstrip('/')}/api/farms/{urllib.parse.quote(farm_id)}/history?{query}"
    headers = {"Accept": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S) as answer:
            body = answer.read(MAX_BODY + 1)
    except urllib.error.HTTPError as exc:
        raise HistoryUnavailable(f"the discovery API answered {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise HistoryUnavailable(f"the discovery API is unreachable: {exc}") from None
    if len(body) > MAX_BODY:
        raise HistoryUnavailable("the discovery API's answer is too large")
    try:
        return History.model_validate_json(body)  # pydantic's parser: no Python recursion on deep nesting
    except ValidationError as exc:
        raise HistoryUnavailable(f"the discovery API's answer is not history: {exc}") from None


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
    try:
        found = fetch_history(base_url, current_app.config.get("DISCOVERY_TOKEN"), view.farm_id, name, range_)
    except HistoryUnavailable as exc:
        log.warning("farm %s: history of %s not available: %s", view.farm_id, name, exc)
        return _error(502, _("History is not available right now."))
    points: list[dict[str, Any]] = [p.model_dump(mode="json") for p in found.points if p.value is not None]
    return jsonify(farm=view.farm_id, name=name, range=range_, unit=unit_text(info.unit),
                   decimals=CHART_DECIMALS if info.decimals is None else info.decimals, points=points), 200
