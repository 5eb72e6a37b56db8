"""``/alerts``: the alerts of the farms the user may see — open, acknowledged, and the recent cleared ones.

Open and acknowledged alerts are the discovery node's retained ``{base}/alerts/{farm}`` messages the
bridge keeps; the recent ones (cleared too) are asked of the discovery API server-side, like the
history, and shown only for the user's farms. Every text is built here, in the page's language, from
the alert's kind and subject (and the farm profile's bit labels), not taken from its English message.
"""

from __future__ import annotations

import logging
import re

from flask import Blueprint, current_app, render_template
from flask_babel import lazy_gettext

from contract.payloads import AlertItem
from contract.rest import AlertList
from mobile_web.auth import User, current_user, login_required
from mobile_web.bridge import FarmView
from mobile_web.discovery_api import DiscoveryUnavailable, get_answer
from mobile_web.farms import bridge, language, profile_of, unnamed_bit, visible_views

log = logging.getLogger("kubmesh.web.alerts")
bp = Blueprint("alerts", __name__)

RECENT = 50
BIT_LABEL = re.compile(r"^(alarm|warning) bit (\d+)$")  # the discovery node's subject for an unnamed bit
KIND_TITLES = {
    "alarm": lazy_gettext("Controller alarm"),
    "warning": lazy_gettext("Controller warning"),
    "farm_silent": lazy_gettext("Farm silent"),
    "controller_unreachable": lazy_gettext("Controller not answering"),
    "sensor_fault": lazy_gettext("Sensor fault"),
    "backlog_dropped": lazy_gettext("Readings lost"),
    "value_rule": lazy_gettext("Value out of range"),
}
SILENT_REASONS = {"offline": lazy_gettext("offline"), "silent": lazy_gettext("nothing heard")}
FAULTS = {"break": lazy_gettext("sensor break"), "error": lazy_gettext("sensor error")}


class AlertsUnavailable(DiscoveryUnavailable):
    """The discovery node could not be asked, or answered something unusable."""


def fetch_alerts(base_url: str, token: str | None) -> list[AlertItem]:
    """Every farm's alerts, cleared ones too, newest first (the caller filters by what the user may see)."""
    return get_answer(base_url, token, "/api/alerts?state=all", AlertList, "alerts", AlertsUnavailable).alerts


@bp.app_template_global()
def alert_text(view: FarmView | None, alert: AlertItem) -> str:
    """What happened, in the page's language; an unknown kind falls back to the node's own message."""
    title = KIND_TITLES.get(alert.kind)
    if title is None:
        return alert.message
    subject = alert.subject
    if not subject:
        return str(title)
    if alert.kind in ("alarm", "warning"):
        return f"{title}: {_bit_text(view, alert.kind, subject)}"
    if alert.kind == "farm_silent":
        return f"{title} ({SILENT_REASONS.get(subject, subject)})"
    if alert.kind in ("sensor_fault", "value_rule"):
        return f"{title}: {subject}"
    return str(title)


def _bit_text(view: FarmView | None, kind: str, subject: str) -> str:
    match = BIT_LABEL.fullmatch(subject)
    if match is not None:
        return unnamed_bit(match.group(1), int(match.group(2)))
    profile = profile_of(view) if view is not None else None
    for group in profile.alarm_groups if profile else []:  # a named bit: its label in the page's language
        for labels in group.labels.values():
            if group.kind == kind and labels.get("en") == subject:
                return labels.get(language())
    return subject


def farm_name(view: FarmView | None, farm_id: str) -> str:
    return view.meta.name if view is not None and view.meta and view.meta.name else farm_id


@bp.get("/alerts")
@login_required
def alerts() -> str:
    since = bridge().hub.last_id()  # taken before the views: what changes after it reaches the page's stream
    user = current_user()
    assert user is not None
    views = {view.farm_id: view for view in visible_views()}
    current = [alert for view in views.values() if view.alerts for alert in view.alerts.alerts]
    current.sort(key=lambda a: (a.state != "open", -a.opened.timestamp()))
    recent: list[AlertItem] | None = None
    base_url = current_app.config.get("DISCOVERY_URL")
    if base_url:
        try:
            found = fetch_alerts(base_url, current_app.config.get("DISCOVERY_TOKEN"))
        except AlertsUnavailable as exc:
            log.warning("recent alerts not available: %s", exc)
        else:
            # the mobile web's token sees every farm: only the user's own are shown
            recent = [a for a in found if a.state == "cleared" and _sees(user, a.farm_id, views)][:RECENT]
    return render_template("alerts.html", user=user, views=views, current=current, recent=recent,
                           alert_text=alert_text, farm_name=farm_name, since=since)


def _sees(user: User, farm_id: str, views: dict[str, FarmView]) -> bool:
    """A farm the bridge does not hold now (gone since) is shown only to users who see every farm."""
    return farm_id in views or (user.owner is None and bridge().view(farm_id) is None)
