"""The simulator's HTTP control API (``--control-port``): statistics, and faults injected while it runs.

``GET /stats``; ``POST /sentinel`` ``{"name", "status"|null}``; ``POST /alarm`` ``{"group", "bit", "on"}``;
``POST /raw`` ``{"address", "value"|null, "function": "input"|"holding"}``;
``POST /fail`` ``{"mode": "exception"|"timeout"|null, "function"?}``. A bad request answers 400 with
``{"error": ...}``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from farm_agent.simulator.device import Kub1063Simulator

log = logging.getLogger("kubmesh.simulator")

SIMULATOR = web.AppKey("simulator", Kub1063Simulator)


def create_control_api(simulator: Kub1063Simulator) -> web.Application:
    app = web.Application(middlewares=[_errors_as_json])
    app[SIMULATOR] = simulator
    app.router.add_get("/stats", _stats)
    app.router.add_post("/sentinel", _sentinel)
    app.router.add_post("/alarm", _alarm)
    app.router.add_post("/raw", _raw)
    app.router.add_post("/fail", _fail)
    return app


class BadRequest(ValueError):
    pass


_REQUIRED = object()


@web.middleware
async def _errors_as_json(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except ValueError as exc:  # BadRequest, invalid JSON, and the simulator's own refusals
        log.warning("control API: %s %s refused: %s", request.method, request.path, exc)
        return web.json_response({"error": str(exc)}, status=400)


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except json.JSONDecodeError:
        raise BadRequest("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _field(body: dict[str, Any], name: str, kind: type, *, default: Any = _REQUIRED, nullable: bool = False) -> Any:
    if name not in body:
        if default is _REQUIRED:
            raise BadRequest(f"missing field {name!r}")
        return default
    value = body[name]
    if value is None and nullable:
        return None
    # bool is an int in Python, but true is no register address
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadRequest(f"field {name!r} must be {'null or ' if nullable else ''}{kind.__name__}")
    return value


def _ok() -> web.Response:
    return web.json_response({"ok": True})


async def _stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIMULATOR].stats)


async def _sentinel(request: web.Request) -> web.Response:
    body = await _body(request)
    request.app[SIMULATOR].set_sentinel(_field(body, "name", str), _field(body, "status", str, nullable=True))
    return _ok()


async def _alarm(request: web.Request) -> web.Response:
    body = await _body(request)
    request.app[SIMULATOR].set_alarm(_field(body, "group", str), _field(body, "bit", int),
                                     _field(body, "on", bool, default=True))
    return _ok()


async def _raw(request: web.Request) -> web.Response:
    body = await _body(request)
    request.app[SIMULATOR].pin_raw(_field(body, "address", int), _field(body, "value", int, nullable=True),
                                   _field(body, "function", str, default="input"))
    return _ok()


async def _fail(request: web.Request) -> web.Response:
    body = await _body(request)
    request.app[SIMULATOR].set_fail(_field(body, "mode", str, nullable=True),
                                    _field(body, "function", int, default=None, nullable=True))
    return _ok()
