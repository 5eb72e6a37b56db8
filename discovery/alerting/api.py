"""REST of the alerting: ``GET /api/alerts`` and ``POST /api/alerts/{id}/ack``, behind the API's Bearer auth.

A caller sees the alerts of the farms it may see. Acknowledging is for operators and admins (or a
token acting for one) and for the static ``API_TOKEN``, recorded as ``API_TOKEN``.
"""

from __future__ import annotations

from aiohttp import web

from common.identities import Role, StoreError
from contract.topics import InvalidTopic, check_farm_id
from discovery.alerting.service import AckRefused, AlertingService
from discovery.api import CALLER, IDENTITIES, STATIC_TOKEN_CALLER, Caller, error

ALERTING = web.AppKey("alerting", AlertingService)
STATES = ("open", "all")
ACKNOWLEDGING_ROLES = (Role.OPERATOR, Role.ADMIN)


def add_alert_routes(app: web.Application, alerting: AlertingService) -> None:
    app[ALERTING] = alerting
    app.router.add_get("/api/alerts", _alerts)
    app.router.add_post("/api/alerts/{id}/ack", _acknowledge)


async def _alerts(request: web.Request) -> web.Response:
    farm_id = request.query.get("farm") or None
    state = request.query.get("state", "open")
    if state not in STATES:
        return error(400, "invalid state", "state is open or all")
    if farm_id is not None:
        try:
            check_farm_id(farm_id)
        except InvalidTopic as exc:
            return error(400, "invalid farm id", str(exc))
    alerting = request.app[ALERTING]
    caller: Caller = request[CALLER]
    items = await alerting.alert_items(farm_id, state)
    visible = [item for item in items if caller.owner is None or alerting.farm_owner(item.farm_id) == caller.owner]
    return web.json_response({"alerts": [item.model_dump(mode="json", exclude_none=True) for item in visible]})


async def _acknowledge(request: web.Request) -> web.Response:
    alerting = request.app[ALERTING]
    caller: Caller = request[CALLER]
    if caller is not STATIC_TOKEN_CALLER:
        try:
            identity = request.app[IDENTITIES].get(caller.name)
        except StoreError:
            identity = None
        if identity is None or identity.role not in ACKNOWLEDGING_ROLES:
            return error(403, "forbidden", "acknowledging is for operators and admins")
    alert_id = request.match_info["id"]
    found = next((a for a in alerting.engine.alerts() if a.id == alert_id), None)
    if found is None or (caller.owner is not None and alerting.farm_owner(found.farm_id) != caller.owner):
        return error(404, "alert not found", "no alert with this id is open")
    try:
        alert = await alerting.acknowledge(alert_id, caller.name, via="rest")
    except AckRefused as exc:
        return error(404, "alert not found", str(exc))
    return web.json_response({"alert": alerting.item(alert).model_dump(mode="json", exclude_none=True)})
