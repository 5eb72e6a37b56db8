"""The agent's local HTTP API (port 8080): health for probes, the newest reading for local tools,
and the routes extensions add (``/metrics``).

A site of one answers as a single farm always has. A site of several houses answers each house at
``/farms/{id}/health``, ``/farms/{id}/api/data`` and ``/farms/{id}/<route>``; at the root, ``/health``
sums the site up (ok only when every house is) with each house's document under ``houses``,
``/api/data`` maps each house to its newest reading, and ``/metrics`` holds every house's series.
"""

from __future__ import annotations

from collections.abc import Iterable

from contract.payloads import format_ts
from farm_agent.agent import FarmAgent
from farm_agent.http_server import HttpServer, Response, Route, json_response
from farm_agent.site import Site

METRICS = "/metrics"


def create_api(site: Site) -> HttpServer:
    houses = site.houses
    if len(houses) == 1:
        return HttpServer(_house_routes(houses[0]))
    routes: dict[str, Route] = {}
    for house in houses:
        routes |= {f"/farms/{house.farm_id}{path}": route for path, route in _house_routes(house).items()}

    async def health() -> Response:
        documents = [health_document(house) for house in houses]
        status = "ok" if all(d["status"] == "ok" for d in documents) else "degraded"
        return json_response({"status": status, "site": site.name, "houses": documents})

    async def data() -> Response:
        return json_response({h.farm_id: h.state.reading.model_dump(mode="json") if h.state.reading else None
                              for h in houses})

    routes |= {"/health": health, "/api/data": data}
    if all(METRICS in house.extensions.routes() for house in houses):
        async def metrics() -> Response:
            answers = [await house.extensions.routes()[METRICS]() for house in houses]
            text = merge_expositions(answer.body.decode() for answer in answers)
            return Response(200, text.encode(), answers[0].content_type)

        routes[METRICS] = metrics
    return HttpServer(routes)


def _house_routes(agent: FarmAgent) -> dict[str, Route]:
    async def health() -> Response:
        return json_response(health_document(agent))

    async def data() -> Response:
        reading = agent.state.reading
        if reading is None:
            return json_response({"error": "no reading yet"}, status=503)
        return json_response(reading.model_dump(mode="json"))

    return {"/health": health, "/api/data": data, **agent.extensions.routes()}


def merge_expositions(texts: Iterable[str]) -> str:
    """Prometheus expositions of several houses as one: each family's HELP and TYPE once, its samples together."""
    families: dict[str, list[str]] = {}
    for text in texts:
        family: list[str] | None = None
        for line in text.splitlines():
            if line.startswith("# HELP "):
                name = line.split(" ", 3)[2]
                family = families.setdefault(name, [])
                if not family:
                    family.append(line)
            elif line.startswith("# TYPE "):
                if family is not None and len(family) == 1:
                    family.append(line)
            elif line and family is not None:
                family.append(line)
    return "".join(line + "\n" for lines in families.values() for line in lines)


def health_document(agent: FarmAgent) -> dict[str, object]:
    state = agent.state
    healthy = state.modbus_ok and state.mqtt_connected and state.storage_error is None
    return {
        "status": "ok" if healthy else "degraded",
        "farm_id": agent.farm_id,
        "broker": "connected" if state.mqtt_connected else "disconnected",
        "modbus": "ok" if state.modbus_ok else "error",
        "modbus_error": state.modbus_error,
        "storage": "ok" if state.storage_error is None else "error",
        "storage_error": state.storage_error,
        "backlog": len(agent.queue),  # readings the history has not confirmed yet
        "discovery": "online" if agent.reporter.discovery_online.is_set() else "offline",
        "committed_seq": agent.reporter.mark,
        "resends": agent.reporter.resends,
        "in_memory": agent.queue.in_memory,
        "dropped": agent.queue.dropped,
        "polls_ok": state.polls_ok,
        "polls_failed": state.polls_failed,
        "last_reading": format_ts(state.reading.ts) if state.reading else None,
        "uptime_s": round(state.uptime_s, 1),
        **{name: part.model_dump(mode="json") for name, part in agent.extensions.status().items()},
    }
