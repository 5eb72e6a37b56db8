"""The agent's local HTTP API (port 8080): health for probes, the newest reading for local tools."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from contract.payloads import format_ts
from farm_agent.agent import FarmAgent
from farm_agent.metrics import agent_metrics

AGENT_KEY = web.AppKey("agent", FarmAgent)
METRICS_KEY = web.AppKey("metrics", CollectorRegistry)


def create_api(agent: FarmAgent) -> web.Application:
    app = web.Application()
    app[AGENT_KEY] = agent
    app[METRICS_KEY] = agent_metrics(agent)
    app.router.add_get("/health", _health)
    app.router.add_get("/api/data", _data)
    app.router.add_get("/metrics", _metrics)
    return app


async def _health(request: web.Request) -> web.Response:
    agent = request.app[AGENT_KEY]
    state = agent.state
    healthy = state.modbus_ok and state.mqtt_connected
    return web.json_response(
        {
            "status": "ok" if healthy else "degraded",
            "farm_id": agent.farm_id,
            "broker": "connected" if state.mqtt_connected else "disconnected",
            "modbus": "ok" if state.modbus_ok else "error",
            "modbus_error": state.modbus_error,
            "backlog": len(agent.queue),
            "dropped": agent.queue.dropped,
            "polls_ok": state.polls_ok,
            "polls_failed": state.polls_failed,
            "last_reading": format_ts(state.reading.ts) if state.reading else None,
            "uptime_s": round(state.uptime_s, 1),
        }
    )


async def _data(request: web.Request) -> web.Response:
    reading = request.app[AGENT_KEY].state.reading
    if reading is None:
        return web.json_response({"error": "no reading yet"}, status=503)
    return web.json_response(reading.model_dump(mode="json"))


async def _metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS_KEY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
