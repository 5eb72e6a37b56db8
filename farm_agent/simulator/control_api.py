"""The simulator's HTTP control API (``--control-port``): statistics, and faults injected while it runs.

``GET /stats``; ``POST /sentinel`` ``{"name", "status"|null}``; ``POST /alarm`` ``{"group", "bit", "on"}``;
``POST /raw`` ``{"address", "value"|null, "function": "input"|"holding"}``;
``POST /fail`` ``{"mode": "exception"|"timeout"|null, "function"?}``. On a bus of several units every
body may name its ``"unit"`` (default: the first unit), and ``GET /stats?unit=N`` gives one unit's
figures (without it, the first unit's, plus ``"units"``: each unit's). A bad request answers 400 with
``{"error": ...}``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from farm_agent.simulator.device import Kub1063Simulator

log = logging.getLogger("kubmesh.simulator")

UNITS = web.AppKey("units", dict[int, Kub1063Simulator])


def create_control_api(simulators: Kub1063Simulator | Sequence[Kub1063Simulator]) -> web.Application:
    """The control API of one simulated unit, or of every unit of a bus (the first one by default)."""
    units = [simulators] if isinstance(simulators, Kub1063Simulator) else list(simulators)
    app = web.Application(middlewares=[_errors_as_json])
    app[UNITS] = {simulator.unit: simulator for simulator in units}
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


def _unit(request: web.Request, number: object) -> Kub1063Simulator:
    units = request.app[UNITS]
    if number is None:
        return next(iter(units.values()))
    if not isinstance(number, int) or isinstance(number, bool) or number not in units:
        raise BadRequest(f"field 'unit' must be one of the bus's unit ids {sorted(units)}")
    return units[number]


def _addressed(request: web.Request, body: dict[str, Any]) -> Kub1063Simulator:
    return _unit(request, body.get("unit"))


async def _stats(request: web.Request) -> web.Response:
    query = request.query.get("unit")
    if query is not None and not query.isdigit():
        raise BadRequest("query parameter 'unit' must be a unit id")
    stats = dict(_unit(request, int(query) if query is not None else None).stats)
    if query is None:
        stats["units"] = {str(number): unit.stats for number, unit in request.app[UNITS].items()}
    return web.json_response(stats)


async def _sentinel(request: web.Request) -> web.Response:
    body = await _body(request)
    _addressed(request, body).set_sentinel(_field(body, "name", str), _field(body, "status", str, nullable=True))
    return _ok()


async def _alarm(request: web.Request) -> web.Response:
    body = await _body(request)
    _addressed(request, body).set_alarm(_field(body, "group", str), _field(body, "bit", int),
                                     _field(body, "on", bool, default=True))
    return _ok()


async def _raw(request: web.Request) -> web.Response:
    body = await _body(request)
    _addressed(request, body).pin_raw(_field(body, "address", int), _field(body, "value", int, nullable=True),
                                   _field(body, "function", str, default="input"))
    return _ok()


async def _fail(request: web.Request) -> web.Response:
    body = await _body(request)
    _addressed(request, body).set_fail(_field(body, "mode", str, nullable=True),
                                    _field(body, "function", int, default=None, nullable=True))
    return _ok()
