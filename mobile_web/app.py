"""The mobile web application factory."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, cast

from flask import Flask, Response, current_app, has_request_context, jsonify, redirect, request, url_for
from flask.sessions import SecureCookieSessionInterface
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_wtf.csrf import CSRFError
from werkzeug.wrappers import Response as WerkzeugResponse

from common.identities import IdentityStore
from contract.topics import Topics
from mobile_web import alerts, auth, farms, health, history, notify, pwa, stream
from mobile_web.bridge import FarmBridge
from mobile_web.extensions import babel, csrf, limiter
from mobile_web.i18n import best_language, compile_catalogs
from mobile_web.login_throttle import LoginDelays, parse_networks
from mobile_web.preferences import Preferences
from mobile_web.settings import WebSettings
from mobile_web.tailnet_guard import install_tailnet_guard

log = logging.getLogger("kubmesh.web")

LANGUAGES = ("ru", "en")
HSTS = "max-age=31536000"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; manifest-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)


def create_app(
    settings: WebSettings, bridge: FarmBridge | None = None, test_config: dict[str, Any] | None = None
) -> Flask:
    app = Flask(__name__)
    app.session_interface = _SessionInterface()
    app.config.update(
        SECRET_KEY=settings.session_secret(),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.secure_cookies,
        PERMANENT_SESSION_LIFETIME=timedelta(days=30),
        LOGIN_LIMIT=settings.login_limit,
        TRUSTED_PROXIES=parse_networks(settings.trusted_proxies),
        POLL_INTERVAL=settings.poll_interval,
        DISCOVERY_URL=settings.discovery_url,
        DISCOVERY_TOKEN=settings.discovery_token,
        BABEL_TRANSLATION_DIRECTORIES=str(compile_catalogs(settings.data_dir / "translations").resolve()),
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session
        MAX_CONTENT_LENGTH=64 * 1024,
    )
    if test_config:
        app.config.update(test_config)
    app.extensions["kubmesh.identities"] = IdentityStore(settings.data_dir)
    app.extensions["kubmesh.login_delays"] = LoginDelays(settings.login_delay_max_s)
    app.extensions["kubmesh.preferences"] = Preferences(settings.data_dir, LANGUAGES)
    app.extensions["kubmesh.bridge"] = bridge or FarmBridge(Topics(settings.base_topic),
                                                            silence_s=settings.health_silence_s)

    babel.init_app(app, locale_selector=_locale)
    csrf.init_app(app)
    limiter.init_app(app)
    app.register_blueprint(auth.bp)
    app.register_blueprint(farms.bp)
    app.register_blueprint(stream.bp)
    app.register_blueprint(history.bp)
    app.register_blueprint(alerts.bp)
    app.register_blueprint(notify.bp)
    app.register_blueprint(pwa.bp)
    app.register_blueprint(health.bp)
    app.add_url_rule("/lang/<code>", "language", _set_language)
    app.register_error_handler(CSRFError, _expired_page)
    app.after_request(_security_headers)
    install_tailnet_guard(app, settings)
    app.context_processor(lambda: {"current_user": auth.current_user(), "lang": str(get_locale() or "en")})
    return app


def request_is_https() -> bool:
    """The browser's request came over HTTPS: to this server, or to a proxy in front of it that says so.

    ``X-Forwarded-Proto`` is believed from anyone: it only makes the answer stricter (a ``Secure``
    cookie, HSTS), which a caller that lies about it can only turn against itself.
    """
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return request.is_secure or forwarded == "https"


class _SessionInterface(SecureCookieSessionInterface):
    """Signed-cookie sessions whose cookie is ``Secure`` when the page came over HTTPS (also through a
    proxy such as ``tailscale serve``), or always with ``secure_cookies``."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"]) or (has_request_context() and request_is_https())


def preferences() -> Preferences:
    return cast(Preferences, current_app.extensions["kubmesh.preferences"])


def _locale() -> str | None:
    """The logged-in user's own choice, then this browser's (the cookie), then what the browser asks for."""
    user = auth.current_user()
    chosen = preferences().language(user.username) if user else None
    if chosen is None and request.cookies.get("lang") in LANGUAGES:
        chosen = request.cookies.get("lang")
    return chosen or best_language(request.headers.get("Accept-Language"), LANGUAGES, default="en")


def _set_language(code: str) -> WerkzeugResponse:
    target = request.referrer if request.referrer and request.referrer.startswith(request.host_url) else None
    response = redirect(target or url_for("farms.index"))
    if code in LANGUAGES:
        user = auth.current_user()
        if user is not None:
            try:
                preferences().set_language(user.username, code)
            except OSError as exc:  # the data dir refuses writes: this browser keeps the choice anyway
                log.warning("cannot keep %s's language: %s", user.username, exc)
        response.set_cookie("lang", code, max_age=365 * 86400, samesite="Lax", httponly=True,
                            secure=request_is_https())
    return response


def _expired_page(error: CSRFError) -> tuple[Response | str, int]:
    """A form or command without a valid CSRF token: said in words the user can act on."""
    log.info("refused %s %s: %s", request.method, request.path, error.description)
    message = _("This page has expired: reload it and try again.")
    if request.is_json:
        return jsonify(error=message), 400
    return message, 400


def _security_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    if has_request_context() and request_is_https():
        response.headers["Strict-Transport-Security"] = HSTS
    return response
