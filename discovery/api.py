"""The discovery REST API (port 8082): JSON, Bearer tokens on /api/*, never a stack trace.

A request to ``/api/*`` carries either the static ``API_TOKEN`` (every farm) or a
token issued by ``kubmesh token add USER`` (stored hashed in the identity
store), which acts for that user or service: an admin, or an identity without
an owner, sees every farm; one with an owner sees only that owner's farms, and
another owner's farm answers 403. Tokens are compared in constant time.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from broker.identities import IdentityStore, Role, StoreError
from broker.topics import InvalidTopic, check_farm_id
from discovery.audit import CommandAudit
from discovery.registry import Registry

log = logging.getLogger("kubmesh.discovery.api")


@dataclass(frozen=True)
class Caller:
    """Who a request acts for, and which owner's farms it may see (None: every farm)."""

    name: str
    owner: str | None


REGISTRY = web.AppKey("registry", Registry)
AUDIT = web.AppKey("audit", CommandAudit)
TOKEN = web.AppKey("token", str)
IDENTITIES = web.AppKey("identities", IdentityStore)
CALLER = "kubmesh.caller"
STATIC_TOKEN_CALLER = Caller("API_TOKEN", None)
HealthReport = Callable[[], dict[str, Any]]
HEALTH: web.AppKey[HealthReport] = web.AppKey("health")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, message: str, detail: str | None = None, **headers: str) -> web.Response:
    body = {"error": message} | ({"detail": detail} if detail else {})
    return web.json_response(body, status=status, headers=headers or None)


def create_api(
    registry: Registry,
    audit: CommandAudit,
    api_token: str | None,
    health: Callable[[], dict[str, Any]],
    identities: IdentityStore,
) -> web.Application:
    app = web.Application(middlewares=[_json_errors, _bearer_auth], client_max_size=64 * 1024)
    app[REGISTRY] = registry
    app[AUDIT] = audit
    app[TOKEN] = api_token or ""
    app[IDENTITIES] = identities
    app[HEALTH] = health
    app.router.add_get("/health", _health)
    app.router.add_get("/api/farms", _farms)
    app.router.add_get("/api/farms/{farm}", _farm)
    app.router.add_get("/api/farms/{farm}/commands", _commands)
    return app


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.content_type == "application/json":
            raise
        return error(exc.status, exc.reason.lower())
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error(500, "internal error")


@web.middleware
async def _bearer_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/api/"):
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        caller = _caller(request.app, given.strip()) if scheme.lower() == "bearer" else None
        if caller is None:
            return error(401, "unauthorized", "send Authorization: Bearer TOKEN", **{"WWW-Authenticate": "Bearer"})
        request[CALLER] = caller
    return await handler(request)


def _caller(app: web.Application, token: str) -> Caller | None:
    static = app[TOKEN]
    if static and hmac.compare_digest(token.encode(), static.encode()):
        return STATIC_TOKEN_CALLER
    try:
        identity = app[IDENTITIES].authenticate_api_token(token)
    except StoreError as exc:
        log.error("cannot check API tokens: %s", exc)
        return None
    if identity is None:
        return None
    return Caller(identity.username, None if identity.role is Role.ADMIN else identity.owner)


def _visible(request: web.Request, farm_id: str, declared_owner: str | None) -> bool:
    caller: Caller = request[CALLER]
    return caller.owner is None or caller.owner == request.app[IDENTITIES].owner_of(farm_id, declared_owner)


async def _health(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    database = "ok" if registry.healthy() else "error"
    body = {"status": "ok" if database == "ok" else "degraded", "database": database, "farms": registry.count()}
    return web.json_response(body | request.app[HEALTH]())


async def _farms(request: web.Request) -> web.Response:
    owner = request.query.get("owner")
    if owner is not None and not 0 < len(owner) <= 128:
        return error(400, "invalid owner")
    farms = [f for f in request.app[REGISTRY].farms(owner) if _visible(request, f["farm_id"], f["owner_id"])]
    return web.json_response({"farms": farms})


def _known_farm(request: web.Request) -> tuple[str, dict[str, Any]]:
    """The farm of the path, or an HTTP error answered as JSON by the middleware."""
    farm_id = request.match_info["farm"]
    try:
        check_farm_id(farm_id)
    except InvalidTopic as exc:
        raise web.HTTPBadRequest(text=_json({"error": "invalid farm id", "detail": str(exc)}),
                                 content_type="application/json") from None
    farm = request.app[REGISTRY].farm(farm_id)
    if farm is None:
        raise web.HTTPNotFound(text=_json({"error": "farm not found", "detail": farm_id}),
                               content_type="application/json")
    if not _visible(request, farm_id, farm["owner_id"]):
        raise web.HTTPForbidden(text=_json({"error": "forbidden", "detail": "the farm of another owner"}),
                                content_type="application/json")
    return farm_id, farm


def _json(body: dict[str, Any]) -> str:
    return json.dumps(body)


async def _farm(request: web.Request) -> web.Response:
    return web.json_response(_known_farm(request)[1])


async def _commands(request: web.Request) -> web.Response:
    farm_id, _ = _known_farm(request)
    limit = request.query.get("limit", "100")
    if not limit.isdigit() or not 1 <= int(limit) <= 1000:
        return error(400, "invalid limit", "a whole number from 1 to 1000")
    return web.json_response({"farm": farm_id, "commands": request.app[AUDIT].commands(farm_id, int(limit))})
