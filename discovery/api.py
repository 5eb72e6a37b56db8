"""The discovery REST API (port 8082): JSON, Bearer tokens on /api/*, never a stack trace."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from broker.topics import InvalidTopic, check_farm_id
from discovery.registry import Registry

log = logging.getLogger("kubmesh.discovery.api")

REGISTRY = web.AppKey("registry", Registry)
TOKEN = web.AppKey("token", str)
HEALTH = web.AppKey("health", Callable[[], dict[str, Any]])
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, message: str, detail: str | None = None, **headers: str) -> web.Response:
    body = {"error": message} | ({"detail": detail} if detail else {})
    return web.json_response(body, status=status, headers=headers or None)


def create_api(registry: Registry, api_token: str | None, health: Callable[[], dict[str, Any]]) -> web.Application:
    app = web.Application(middlewares=[_json_errors, _bearer_auth], client_max_size=64 * 1024)
    app[REGISTRY] = registry
    app[TOKEN] = api_token or ""
    app[HEALTH] = health
    app.router.add_get("/health", _health)
    app.router.add_get("/api/farms", _farms)
    app.router.add_get("/api/farms/{farm}", _farm)
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
        expected = request.app[TOKEN]
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if not expected or scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), expected.encode()):
            return error(401, "unauthorized", "send Authorization: Bearer TOKEN", **{"WWW-Authenticate": "Bearer"})
    return await handler(request)


async def _health(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    database = "ok" if registry.healthy() else "error"
    body = {"status": "ok" if database == "ok" else "degraded", "database": database, "farms": registry.count()}
    return web.json_response(body | request.app[HEALTH]())


async def _farms(request: web.Request) -> web.Response:
    owner = request.query.get("owner")
    if owner is not None and not 0 < len(owner) <= 128:
        return error(400, "invalid owner")
    return web.json_response({"farms": request.app[REGISTRY].farms(owner)})


async def _farm(request: web.Request) -> web.Response:
    farm_id = request.match_info["farm"]
    try:
        check_farm_id(farm_id)
    except InvalidTopic as exc:
        return error(400, "invalid farm id", str(exc))
    farm = request.app[REGISTRY].farm(farm_id)
    if farm is None:
        return error(404, "farm not found", farm_id)
    return web.json_response(farm)
