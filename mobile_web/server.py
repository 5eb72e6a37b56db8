"""Serving the mobile web for real: gevent's WSGI server.

Each open Server-Sent-Events stream is a greenlet waiting on its queue, so
hundreds of phones cost memory, not threads; the process is patched by
gevent before anything else is imported (see ``kubmesh.cli``).
"""

from __future__ import annotations

import logging
import signal

import gevent
from gevent.pywsgi import WSGIServer

from broker.topics import Topics
from mobile_web.app import create_app
from mobile_web.bridge import FarmBridge
from mobile_web.settings import WebSettings

log = logging.getLogger("kubmesh.web")


def serve(settings: WebSettings) -> int:
    bridge = FarmBridge(Topics(settings.base_topic))
    app = create_app(settings, bridge)
    server = WSGIServer((settings.host, settings.port), app, log=None, error_log=log)
    bridge.start(settings.mqtt(), keepalive=settings.keepalive)

    def stop() -> None:
        log.info("stopping")
        server.stop(timeout=2)  # open event streams are closed after that

    gevent.signal_handler(signal.SIGTERM, stop)
    gevent.signal_handler(signal.SIGINT, stop)
    log.info("mobile web on http://%s:%s", settings.host, settings.port)
    try:
        server.serve_forever()
    finally:
        bridge.stop()
    return 0
