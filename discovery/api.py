"""The discovery REST API (port 8082): JSON, Bearer tokens on /api/*, never a stack trace.

A request to ``/api/*`` carries either the static ``API_TOKEN`` (every farm) or a
token issued by ``kubmesh token add USER`` (stored hashed in the identity
store), which acts for that user or service: an admin, or an identity without
an owner, sees every farm; one with an owner sees only that owner's farms, and
another owner's farm answers 403. Tokens are compared in constant time.
"""

from __future__ import annotations

import functools
import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from common.identities import IdentityStore, Role, StoreError
from contract.payloads import format_ts, parse_ts, utc_now
from contract.topics import InvalidTopic, check_farm_id, check_value_name
from discovery.audit import CommandAudit
from discovery.history import HistoryRecorder
from discovery.registry import Registry
from discovery.tailscale.manager import TailscaleManager

log = logging.getLogger("kubmesh.discovery.api")


@dataclass(frozen=True)
class Caller:
    """Who a request acts for, and which owner's farms it may see (None: every farm)."""

    name: str
    owner: str | None


REGISTRY = web.AppKey("registry", Registry)
AUDIT = web.AppKey("audit", CommandAudit)
HISTORY = web.AppKey("history", HistoryRecorder)
TOKEN = web.AppKey("token", str)
IDENTITIES = web.AppKey("identities", IdentityStore)
CALLER = "kubmesh.caller"
STATIC_TOKEN_CALLER = Caller("API_TOKEN", None)
HealthReport = Callable[[], dict[str, Any]]
HEALTH: web.AppKey[HealthReport] = web.AppKey("health")
TAILNET: web.AppKey[TailscaleManager | None] = web.AppKey("tailnet")
METRICS = web.AppKey("metrics", CollectorRegistry)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, message: str, detail: str | None = None, **headers: str) -> web.Response:
    body = {"error": message} | ({"detail": detail} if detail else {})
    return web.json_response(body, status=status, headers=headers or None)


DEFAULT_HISTORY_SPAN = timedelta(days=1)
MAX_RAW_SPAN = timedelta(days=7)  # longer spans need a step
MAX_BUCKETS = 10_000
OPENAPI_FILE = Path(__file__).with_name("openapi.yaml")
STEP_PATTERN = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
STEP_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def create_api(
    registry: Registry,
    audit: CommandAudit,
    api_token: str | None,
    health: Callable[[], dict[str, Any]],
    history: HistoryRecorder,
    identities: IdentityStore,
    *,
    metrics: CollectorRegistry | None = None,
    tailnet: TailscaleManager | None = None,
) -> web.Application:
    app = web.Application(middlewares=[_json_errors, _bearer_auth], client_max_size=64 * 1024)
    app[REGISTRY] = registry
    app[AUDIT] = audit
    app[HISTORY] = history
    app[TOKEN] = api_token or ""
    app[IDENTITIES] = identities
    app[HEALTH] = health
    app[TAILNET] = tailnet
    app.router.add_get("/health", _health)
    app.router.add_get("/api/farms", _farms)
    app.router.add_get("/api/farms/{farm}", _farm)
    app.router.add_get("/api/farms/{farm}/commands", _commands)
    app.router.add_get("/api/farms/{farm}/history", _history)
    app.router.add_get("/api/tailnet/devices", _tailnet_devices)
    app.router.add_get("/openapi.json", _openapi)
    if metrics is not None:
        app[METRICS] = metrics
        app.router.add_get("/metrics", _metrics)
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
    farm_id, farm = _known_farm(request)
    return web.json_response(farm | {"history": request.app[HISTORY].gaps(farm_id)})


class BadParameter(ValueError):
    pass


async def _history(request: web.Request) -> web.Response:
    farm_id, _ = _known_farm(request)
    try:
        name, start, end, step = _history_query(request.query)
    except BadParameter as exc:
        return error(400, "invalid history query", str(exc))
    points = request.app[HISTORY].points(farm_id, name, start, end, step)
    body: dict[str, Any] = {"farm": farm_id, "name": name, "from": format_ts(start), "to": format_ts(end)}
    if step is not None:
        body["step"] = step
    return web.json_response(body | {"points": points})


def _history_query(query: Any) -> tuple[str, datetime, datetime, float | None]:
    """``name`` (required), ``from``/``to`` (ISO-8601; the last day by default), ``step`` (seconds or 5m, 1h, 1d)."""
    name = query.get("name", "")
    if not name:
        raise BadParameter("name is required: the value to chart, e.g. name=temp_inside")
    try:
        check_value_name(name)
    except InvalidTopic as exc:
        raise BadParameter(str(exc)) from None
    end = _moment(query, "to") or utc_now()
    start = _moment(query, "from") or end - DEFAULT_HISTORY_SPAN
    if start > end:
        raise BadParameter("from is after to")
    step = _step(query.get("step"))
    if step is None and end - start > MAX_RAW_SPAN:
        raise BadParameter(f"a span longer than {MAX_RAW_SPAN.days} days needs a step, e.g. step=1h")
    if step is not None and (end - start).total_seconds() / step > MAX_BUCKETS:
        raise BadParameter(f"more than {MAX_BUCKETS} buckets: choose a larger step")
    return name, start, end, step


def _moment(query: Any, key: str) -> datetime | None:
    text = query.get(key)
    if text is None or text == "":
        return None
    try:
        return parse_ts(text)
    except ValueError:
        raise BadParameter(f"{key} must be an ISO-8601 time such as 2026-11-24T21:05:00Z, not {text!r}") from None


def _step(text: str | None) -> float | None:
    if text is None or text == "":
        return None
    match = STEP_PATTERN.fullmatch(text)
    if not match:
        raise BadParameter(f"step must be seconds or a number with s, m, h or d (5m, 1h), not {text!r}")
    step = float(match[1]) * STEP_UNITS[match[2]]
    if not 1 <= step <= 366 * 86400:
        raise BadParameter("step must be between 1 s and 366 days")
    return step


async def _commands(request: web.Request) -> web.Response:
    farm_id, _ = _known_farm(request)
    limit = request.query.get("limit", "100")
    if not limit.isdigit() or not 1 <= int(limit) <= 1000:
        return error(400, "invalid limit", "a whole number from 1 to 1000")
    return web.json_response({"farm": farm_id, "commands": request.app[AUDIT].commands(farm_id, int(limit))})


async def _tailnet_devices(request: web.Request) -> web.Response:
    if request[CALLER].owner is not None:
        return error(403, "forbidden", "the tailnet's devices are for tokens that see every farm")
    tailnet = request.app[TAILNET]
    if tailnet is None:
        return web.json_response({"tailnet": None, "source": "off", "synced_at": None, "error": None,
                                  "devices": [], "farms": {}})
    return web.json_response(tailnet.devices_report())


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The API described as OpenAPI 3 (``openapi.yaml`` beside this module), served at ``/openapi.json``."""
    document: dict[str, Any] = yaml.safe_load(OPENAPI_FILE.read_text(encoding="utf-8"))
    return document


async def _openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(request.app[METRICS]), headers={"Content-Type": CONTENT_TYPE_LATEST})
