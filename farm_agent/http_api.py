"""The agent's local HTTP API (port 8080): health for probes, the newest reading for local tools,
and the routes extensions add (``/metrics``)."""

from __future__ import annotations

from contract.payloads import format_ts
from farm_agent.agent import FarmAgent
from farm_agent.http_server import HttpServer, Response, json_response


def create_api(agent: FarmAgent) -> HttpServer:
    async def health() -> Response:
        return json_response(health_document(agent))

    async def data() -> Response:
        reading = agent.state.reading
        if reading is None:
            return json_response({"error": "no reading yet"}, status=503)
        return json_response(reading.model_dump(mode="json"))

    return HttpServer({"/health": health, "/api/data": data, **agent.extensions.routes()})


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
        "backlog": len(agent.queue),
        "in_memory": agent.queue.in_memory,
        "dropped": agent.queue.dropped,
        "polls_ok": state.polls_ok,
        "polls_failed": state.polls_failed,
        "last_reading": format_ts(state.reading.ts) if state.reading else None,
        "uptime_s": round(state.uptime_s, 1),
        **{name: part.model_dump(mode="json") for name, part in agent.extensions.status().items()},
    }
