"""The discovery REST API (port 8082): JSON, Bearer tokens on /api/*, never a stack trace.

A request to ``/api/*`` carries either the static ``API_TOKEN`` (every farm) or a
token issued by ``kubmesh token add USER`` (stored hashed in the identity
store), which acts for that user or service: an admin, or an identity without
an owner, sees every farm; one with an owner sees only that owner's farms, and
another owner's farm answers 403. Tokens are compared in constant time.

Every route's parameters are validated by its model in :mod:`contract.rest` (a misfit answers 400
with the reason) and every answer is one of its models. Nothing here waits on a disk on the event
loop: the stores are read on their reader threads, tokens and owners checked on a worker thread.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import ValidationError

from common.history_csv import BadTimeZone, history_csv, time_zone
from common.identities import IdentityStore, Role, StoreError
from contract.rest import (
    Answer,
    CommandList,
    CommandsQuery,
    ErrorAnswer,
    FarmDetail,
    FarmList,
    FarmPath,
    FarmsQuery,
    Health,
    History,
    HistoryQuery,
    Parameters,
    TailnetDevices,
    rest_schemas,
)
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
Scrape = Callable[[], Awaitable[bytes]]
HEALTH: web.AppKey[HealthReport] = web.AppKey("health")
TAILNET: web.AppKey[TailscaleManager | None] = web.AppKey("tailnet")
METRICS: web.AppKey[Scrape] = web.AppKey("metrics")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OPENAPI_FILE = Path(__file__).with_name("openapi.yaml")
P = TypeVar("P", bound=Parameters)


def answer(model: Answer, status: int = 200, **headers: str) -> web.Response:
    return web.Response(text=model.model_dump_json(by_alias=True, exclude_unset=True), status=status,
                        content_type="application/json", headers=headers or None)


def error(status: int, message: str, detail: str | None = None, **headers: str) -> web.Response:
    body = ErrorAnswer(error=message, detail=detail) if detail else ErrorAnswer(error=message)
    return answer(body, status, **headers)


class Refused(Exception):
    """A request answered with an error: raised where the reason is found, answered by the middleware."""

    def __init__(self, status: int, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.response = error(status, message, detail)


def parameters(model: type[P], values: Mapping[str, str]) -> P:
    """The route's parameters validated by their model, or a 400 that says which one and why."""
    try:
        return model.model_validate(dict(values))
    except ValidationError as exc:
        raise Refused(400, model.problem, "; ".join(_reason(e) for e in exc.errors())) from None


def _reason(problem: Any) -> str:
    where = ".".join(str(part) for part in problem["loc"])
    message = str(problem["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def create_api(
    registry: Registry,
    audit: CommandAudit,
    api_token: str | None,
    health: Callable[[], dict[str, Any]],
    history: HistoryRecorder,
    identities: IdentityStore,
    *,
    metrics: Scrape | None = None,
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
    app.router.add_get("/api/farms/{farm}/history.csv", _history_csv)
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
    except Refused as refused:
        return refused.response
    except web.HTTPException as exc:  # aiohttp's own (no such route, method not allowed), as JSON too
        return error(exc.status, exc.reason.lower())
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error(500, "internal error")


@web.middleware
async def _bearer_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/api/"):
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        # a token is checked against the identity store's file and hashes: off the event loop
        caller = await asyncio.to_thread(_caller, request.app, given.strip()) if scheme.lower() == "bearer" else None
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
    """Blocking (the identity store's file): call through ``asyncio.to_thread``."""
    caller: Caller = request[CALLER]
    return caller.owner is None or caller.owner == request.app[IDENTITIES].owner_of(farm_id, declared_owner)


async def _health(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    healthy = await registry.db.read(registry.healthy)
    farms = await registry.db.read(registry.count) if healthy else 0
    return answer(Health(status="ok" if healthy else "degraded", database="ok" if healthy else "error",
                         farms=farms, **request.app[HEALTH]()))


async def _farms(request: web.Request) -> web.Response:
    query = parameters(FarmsQuery, request.query)
    registry = request.app[REGISTRY]
    farms = await registry.db.read(registry.farms, query.owner)
    visible = await asyncio.to_thread(lambda: [f for f in farms if _visible(request, f["farm_id"], f["owner_id"])])
    return answer(FarmList.model_validate({"farms": visible}))


async def _known_farm(request: web.Request) -> tuple[str, dict[str, Any]]:
    """The farm of the path, or a 400, 404 or 403."""
    farm_id = parameters(FarmPath, request.match_info).farm
    registry = request.app[REGISTRY]
    farm = await registry.db.read(registry.farm, farm_id)
    if farm is None:
        raise Refused(404, "farm not found", farm_id)
    if not await asyncio.to_thread(_visible, request, farm_id, farm["owner_id"]):
        raise Refused(403, "forbidden", "the farm of another owner")
    return farm_id, farm


async def _farm(request: web.Request) -> web.Response:
    farm_id, farm = await _known_farm(request)
    history = request.app[HISTORY]
    return answer(FarmDetail.model_validate(farm | {"history": await history.gaps(farm_id)}))


async def _history(request: web.Request) -> web.Response:
    farm_id, _ = await _known_farm(request)
    query = parameters(HistoryQuery, request.query)
    start, end = query.span()
    history = request.app[HISTORY]
    points = await history.db.read(history.points, farm_id, query.name, start, end, query.step)
    body: dict[str, Any] = {"farm": farm_id, "name": query.name, "from": start, "to": end, "points": points}
    if query.step is not None:
        body["step"] = query.step
    return answer(History.model_validate(body))


async def _history_csv(request: web.Request) -> web.Response:
    """The history of one or more values (``name`` repeated) as a spreadsheet (common/history_csv.py):
    ``tz`` the time zone of its times (UTC by default), ``decimal`` ``.`` (fields by ``,``) or ``,`` (by ``;``);
    ``from``, ``to`` and ``step`` as for ``/history``."""
    farm_id, _ = await _known_farm(request)
    names = list(dict.fromkeys(request.query.getall("name", []))) or [""]
    queries = [parameters(HistoryQuery, {**request.query, "name": name}) for name in names]
    decimal = request.query.get("decimal", ".")
    if decimal not in (".", ","):
        raise Refused(400, HistoryQuery.problem, "decimal: . or ,")
    try:
        zone = time_zone(request.query.get("tz") or "UTC")
    except BadTimeZone as exc:
        raise Refused(400, HistoryQuery.problem, f"tz: {exc}") from None
    history = request.app[HISTORY]
    series = {}
    for query in queries:
        start, end = query.span()
        points = await history.db.read(history.points, farm_id, query.name, start, end, query.step)
        series[query.name] = [(point["ts"], point["value"]) for point in points]
    body = history_csv(series, zone, decimal="," if decimal == "," else ".")
    return web.Response(body=body, content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{farm_id}-history.csv"'})


async def _commands(request: web.Request) -> web.Response:
    farm_id, _ = await _known_farm(request)
    query = parameters(CommandsQuery, request.query)
    audit = request.app[AUDIT]
    commands = await audit.db.read(audit.commands, farm_id, query.limit)
    return answer(CommandList.model_validate({"farm": farm_id, "commands": commands}))


async def _tailnet_devices(request: web.Request) -> web.Response:
    if request[CALLER].owner is not None:
        return error(403, "forbidden", "the tailnet's devices are for tokens that see every farm")
    tailnet = request.app[TAILNET]
    if tailnet is None:
        return answer(TailnetDevices(tailnet=None, source="off", synced_at=None, error=None, devices=[], farms={}))
    return answer(TailnetDevices.model_validate(await asyncio.to_thread(tailnet.devices_report)))


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The API described as OpenAPI 3.1, served at ``/openapi.json``: the routes from ``openapi.yaml`` beside
    this module, the answers' schemas generated from :mod:`contract.rest`."""
    document: dict[str, Any] = yaml.safe_load(OPENAPI_FILE.read_text(encoding="utf-8"))
    document["components"]["schemas"] = rest_schemas()
    return document


async def _openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(body=await request.app[METRICS](), headers={"Content-Type": CONTENT_TYPE_LATEST})
