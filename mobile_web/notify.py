"""``/notify``: the logged-in user's own notification settings — channels (list, add an Apprise URL, remove,
test each), the lowest severity, quiet hours, language — and enabling Web Push on this phone.

The settings live on the discovery node; this page asks its REST API (``/api/notify/{user}``)
server-side with the mobile web's token, like the history, always for the logged-in user only, so
that a user can reach nobody's settings but their own.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, redirect, render_template, request, url_for
from flask_babel import gettext as _
from pydantic import BaseModel, ValidationError
from werkzeug.wrappers import Response as WerkzeugResponse

from contract.rest import NotifySettings, NotifyTest
from mobile_web.auth import current_user, login_required

log = logging.getLogger("kubmesh.web.notify")
bp = Blueprint("notify", __name__)

TIMEOUT_S = 15.0  # a test tries every channel once; an unreachable one takes its own timeout
MAX_BODY = 256 * 1024


class NotifyUnavailable(Exception):
    """The discovery node could not be asked, or answered something unusable."""


class NotifyRefused(Exception):
    """The discovery node refused the change (a bad URL, bad hours); the detail says why."""


def call(method: str, path: str, answer: type[BaseModel], body: dict[str, Any] | None = None,
         query: dict[str, str] | None = None) -> Any:
    base_url = current_app.config.get("DISCOVERY_URL")
    if not base_url:
        raise NotifyUnavailable("DISCOVERY_SERVICE_URL is not set")
    user = current_user()
    assert user is not None
    url = f"{base_url.rstrip('/')}/api/notify/{urllib.parse.quote(user.username)}{path}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    token = current_app.config.get("DISCOVERY_TOKEN")
    headers = {"Accept": "application/json", "Content-Type": "application/json"}
    headers |= {"Authorization": f"Bearer {token}"} if token else {}
    data = None if body is None else json.dumps(body).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data, headers, method=method),
                                    timeout=TIMEOUT_S) as found:
            text = found.read(MAX_BODY + 1)
    except urllib.error.HTTPError as exc:
        if exc.code in (400, 404):
            raise NotifyRefused(_detail(exc)) from None
        raise NotifyUnavailable(f"the discovery API answered {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise NotifyUnavailable(f"the discovery API is unreachable: {exc}") from None
    try:
        return answer.model_validate_json(text[:MAX_BODY])
    except ValidationError as exc:
        raise NotifyUnavailable(f"the discovery API's answer is not {answer.__name__}: {exc}") from None


def _detail(exc: urllib.error.HTTPError) -> str:
    try:
        found = json.loads(exc.read(MAX_BODY))
        return str(found.get("detail") or found.get("error"))
    except (ValueError, AttributeError, OSError):
        return f"answered {exc.code}"


def _page(problem: str | None = None, tests: NotifyTest | None = None, status: int = 200) -> tuple[str, int]:
    try:
        settings: NotifySettings | None = call("GET", "", NotifySettings)
    except (NotifyUnavailable, NotifyRefused) as exc:
        log.warning("notification settings not available: %s", exc)
        settings, problem = None, problem or _("Notification settings are not available right now.")
    failed = {result.url for result in tests.results if not result.ok} if tests else set()
    return render_template("notify.html", settings=settings, problem=problem, tests=tests, failed=failed,
                           user=current_user()), status


def _change(method: str, path: str, body: dict[str, Any] | None = None,
            query: dict[str, str] | None = None) -> WerkzeugResponse | tuple[str, int]:
    try:
        call(method, path, NotifySettings, body, query)
    except NotifyRefused as exc:
        return _page(_("Not changed: %(detail)s", detail=str(exc)), status=400)
    except NotifyUnavailable as exc:
        log.warning("notification settings not changed: %s", exc)
        return _page(_("Notification settings are not available right now."), status=502)
    return redirect(url_for("notify.settings"))


@bp.get("/notify")
@login_required
def settings() -> tuple[str, int]:
    return _page()


@bp.post("/notify/channels")
@login_required
def add_channel() -> WerkzeugResponse | tuple[str, int]:
    return _change("POST", "/channels", {"url": request.form.get("url", "").strip(),
                                         "severity": request.form.get("severity", "warning")})


@bp.post("/notify/channels/remove")
@login_required
def remove_channel() -> WerkzeugResponse | tuple[str, int]:
    return _change("DELETE", "/channels", query={"url": request.form.get("url", "")})


@bp.post("/notify/preferences")
@login_required
def preferences() -> WerkzeugResponse | tuple[str, int]:
    start, end = request.form.get("quiet_start") or None, request.form.get("quiet_end") or None
    return _change("PATCH", "", {"language": request.form.get("language") or None, "quiet_start": start,
                                 "quiet_end": end, "severity": request.form.get("severity") or None})


@bp.post("/notify/test")
@login_required
def test() -> tuple[str, int]:
    try:
        results: NotifyTest = call("POST", "/test", NotifyTest, {})
    except (NotifyUnavailable, NotifyRefused) as exc:
        log.warning("notification test not sent: %s", exc)
        return _page(_("Notification settings are not available right now."), status=502)
    return _page(tests=results)


@bp.post("/notify/webpush")
@login_required
def webpush() -> tuple[Response, int]:
    """The browser's push subscription (``PushSubscription.toJSON()``), kept as the user's Web Push channel."""
    found = request.get_json(silent=True)
    keys = found.get("keys") if isinstance(found, dict) else None
    if not isinstance(found, dict) or not isinstance(keys, dict):
        return jsonify(error=_("Expected a push subscription.")), 400
    subscription = {"endpoint": found.get("endpoint"), "p256dh": keys.get("p256dh"), "auth": keys.get("auth")}
    try:
        call("POST", "/channels", NotifySettings, {"webpush": subscription})
    except NotifyRefused as exc:
        return jsonify(error=_("Not changed: %(detail)s", detail=str(exc))), 400
    except NotifyUnavailable as exc:
        log.warning("push subscription not kept: %s", exc)
        return jsonify(error=_("Notification settings are not available right now.")), 502
    return jsonify(ok=True), 201
