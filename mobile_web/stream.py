"""``/events``: the Server-Sent-Events stream the pages listen to."""

from __future__ import annotations

import queue
from collections.abc import Iterator

from flask import Blueprint, Response, current_app, jsonify, request, stream_with_context

from contract.topics import InvalidTopic, check_farm_id
from mobile_web.auth import current_user
from mobile_web.bridge import FARM_REMOVED
from mobile_web.farms import bridge, owner_of

bp = Blueprint("stream", __name__)
HEARTBEAT_S = 15.0  # a comment line this often keeps proxies and phones from closing an idle stream


@bp.get("/events")
def events() -> Response:
    user = current_user()
    if user is None:
        return Response('{"error": "login required"}', status=401, mimetype="application/json")
    farm_id = request.args.get("farm") or None
    if farm_id is not None:
        try:
            check_farm_id(farm_id)
        except InvalidTopic:
            response = jsonify(error="invalid farm id")
            response.status_code = 400
            return response
    last_id = (request.headers.get("Last-Event-ID") or request.args.get("last_event_id") or "")[:64] or None
    heartbeat = float(current_app.config.get("SSE_HEARTBEAT_S", HEARTBEAT_S))
    subscriber = bridge().hub.subscribe(farm_id, last_id)

    def stream() -> Iterator[str]:
        try:
            yield "retry: 3000\n\n"
            while True:
                try:
                    event = subscriber.queue.get(timeout=heartbeat)
                except queue.Empty:
                    yield ": ping\n\n"
                    continue
                if event is None:
                    return  # closed as too slow: the browser reconnects with Last-Event-ID
                # an owner's user sees only theirs (a removal says no more than the card it removes)
                if event.farm_id is not None and user.owner is not None and event.type != FARM_REMOVED:
                    view = bridge().view(event.farm_id)
                    if not user.sees(owner_of(view) if view else None):
                        continue
                yield event.encode()
        finally:
            bridge().hub.unsubscribe(subscriber)

    response = Response(stream_with_context(stream()), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    return response
