"""Login and logout for people (viewer, operator, admin), checked against the identity store."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar, cast

from flask import Blueprint, Response, current_app, g, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_wtf.csrf import generate_csrf

from common.identities import Identity, IdentityStore, Role, StoreError
from mobile_web.extensions import limiter
from mobile_web.login_throttle import LoginDelays, client_address
from mobile_web.redirects import local_target

log = logging.getLogger("kubmesh.web.auth")
bp = Blueprint("auth", __name__)
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class User:
    username: str
    role: Role
    owner: str | None

    @property
    def may_command(self) -> bool:
        return self.role in (Role.OPERATOR, Role.ADMIN)

    def sees(self, owner_id: str | None) -> bool:
        return self.owner is None or self.owner == owner_id


def store() -> IdentityStore:
    return cast(IdentityStore, current_app.extensions["kubmesh.identities"])


def current_user() -> User | None:
    """The session's user, looked up again each request so that a removed user is out at once."""
    if "user" not in g:
        g.user = None
        username = session.get("username")
        if isinstance(username, str) and username:
            try:
                identity: Identity | None = store().get(username)
            except StoreError:
                identity = None
            if identity is not None and identity.role.is_person:
                g.user = User(identity.username, identity.role, identity.owner)
            else:
                session.clear()
        elif username is not None:
            session.clear()
    return cast(User | None, g.user)


def login_required(view: F) -> F:
    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if current_user() is None:
            return redirect(url_for("auth.login", next=request.path))
        return view(*args, **kwargs)

    return cast(F, wrapped)


def _failed_login(response: Response) -> bool:
    return response.status_code == 401


def caller_address() -> str:
    """The caller's address, through a trusted proxy's ``X-Forwarded-For`` (mobile_web.login_throttle)."""
    return client_address(request.remote_addr, request.headers.get("X-Forwarded-For"),
                          current_app.config["TRUSTED_PROXIES"])


def _login_name() -> str:
    return (request.form.get("username") or "").strip().lower()[:64]


def _address_and_username_key() -> str:
    return f"login:{caller_address()}:{_login_name()}"


def delays() -> LoginDelays:
    return cast(LoginDelays, current_app.extensions["kubmesh.login_delays"])


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(lambda: current_app.config["LOGIN_LIMIT"], methods=["POST"], deduct_when=_failed_login,
               key_func=_address_and_username_key)
def login() -> Any:
    if request.method == "GET":
        return render_template("login.html")
    username = (request.form.get("username") or "").strip()
    password = request.form.get("password") or ""
    address = caller_address()
    keys = (f"user:{_login_name()}", f"addr:{address}")
    delays().wait(keys)  # a right password waits too, and then gets in: a guesser cannot lock its owner out
    try:
        identity = store().authenticate(username, password)
    except StoreError as exc:
        log.error("cannot check logins: %s", exc)
        identity = None
    if identity is None or not identity.role.is_person:
        delays().failed(keys)
        # an unknown name may be a password typed into the wrong field: it is not logged
        known = _known_username(username)
        log.warning("failed login for %s from %s", repr(username) if known else "an unknown username", address)
        return render_template("login.html", error=_("Wrong username or password."), username=username), 401
    session.clear()
    session["username"] = identity.username
    session.permanent = True
    # The CSRF token goes into the very cookie that logs the user in. A request still in flight with
    # that cookie (the service worker fetching the shell) answers with it again, and it must not
    # take away a token that a page rendered meanwhile has handed to the browser.
    generate_csrf()
    return redirect(local_target(request.args.get("next"), url_for("farms.index")))


def _known_username(username: str) -> bool:
    try:
        return store().get(username) is not None
    except StoreError:
        return False


@bp.post("/logout")
def logout() -> Any:
    session.clear()
    return redirect(url_for("auth.login"))
