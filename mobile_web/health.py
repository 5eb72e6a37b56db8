"""``/health``: whether the web is receiving from the bus, for a supervisor or a monitor.

200 with ``"status": "ok"`` while connected with messages arriving; 503 with ``"degraded"`` when the
broker connection is down or nothing has arrived for ``health_silence_s`` (pages would show old
values). No session is needed, and nothing of any farm is said.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from mobile_web.farms import bridge

bp = Blueprint("health", __name__)


@bp.get("/health")
def health() -> tuple[Response, int]:
    state = bridge().health()
    return jsonify(state.as_dict()), 200 if state.receiving else 503
