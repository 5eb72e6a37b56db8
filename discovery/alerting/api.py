"""REST of the alerting: ``GET /api/alerts`` and ``POST /api/alerts/{id}/ack``, behind the API's Bearer auth.

A caller sees the alerts of the farms it may see. Acknowledging is for operators and admins (or a
token acting for one) and for the static ``API_TOKEN``, recorded as ``API_TOKEN``. Parameters are
validated by their models in :mod:`contract.rest`; the identity store is read off the event loop.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from common.identities import Role, StoreError
from contract.rest import AlertAnswer, AlertList, AlertPath, AlertsQuery
from discovery.alerting.service import AckRefused, AlertingService
from discovery.api import CALLER, IDENTITIES, STATIC_TOKEN_CALLER, Caller, Refused, answer, parameters

ALERTING = web.AppKey("alerting", AlertingService)
ACKNOWLEDGING_ROLES = (Role.OPERATOR, Role.ADMIN)


def add_alert_routes(app: web.Application, alerting: AlertingService) -> None:
    app[ALERTING] = alerting
    app.router.add_get("/api/alerts", _alerts)
    app.router.add_post("/api/alerts/{id}/ack", _acknowledge)


async def _alerts(request: web.Request) -> web.Response:
    query = parameters(AlertsQuery, request.query)
    alerting = request.app[ALERTING]
    caller: Caller = request[CALLER]
    items = await alerting.alert_items(query.farm, query.state)
    if caller.owner is not None:
        farms = {item.farm_id for item in items}
        owners = await asyncio.to_thread(lambda: {farm: alerting.farm_owner(farm) for farm in farms})
        items = [item for item in items if owners[item.farm_id] == caller.owner]
    return answer(AlertList(alerts=items))


async def _acknowledge(request: web.Request) -> web.Response:
    path = parameters(AlertPath, request.match_info)
    alerting = request.app[ALERTING]
    caller: Caller = request[CALLER]
    if caller is not STATIC_TOKEN_CALLER and not await asyncio.to_thread(_may_acknowledge, request, caller):
        raise Refused(403, "forbidden", "acknowledging is for operators and admins")
    found = next((a for a in alerting.engine.alerts() if a.id == path.id), None)
    if (found is not None and caller.owner is not None
            and await asyncio.to_thread(alerting.farm_owner, found.farm_id) != caller.owner):
        found = None
    if found is None:
        raise Refused(404, "alert not found", "no alert with this id is open")
    try:
        alert = await alerting.acknowledge(path.id, caller.name, via="rest")
    except AckRefused as exc:
        raise Refused(404, "alert not found", str(exc)) from None
    return answer(AlertAnswer(alert=alerting.item(alert)))


def _may_acknowledge(request: web.Request, caller: Caller) -> bool:
    """Blocking (the identity store's file)."""
    try:
        identity = request.app[IDENTITIES].get(caller.name)
    except StoreError:
        return False
    return identity is not None and identity.role in ACKNOWLEDGING_ROLES
