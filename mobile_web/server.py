"""Serving the mobile web for real: gevent's WSGI server.

Each open Server-Sent-Events stream is a greenlet waiting on its queue, so
hundreds of phones cost memory, not threads; the process is patched by
gevent before anything else is imported (see ``kubmesh.cli``).

Each connection gets a small kernel send buffer and a timeout: a browser that
stops reading fills its buffer after a few dozen kilobytes (not the kernel's
megabytes), so its queue overflows soon and the hub closes its stream, and a
phone that vanished without closing its connection is let go after a minute.
"""

from __future__ import annotations

import logging
import signal
import socket

import gevent
from gevent.pywsgi import WSGIHandler, WSGIServer

from contract.topics import Topics
from mobile_web.app import create_app
from mobile_web.bridge import FarmBridge
from mobile_web.settings import WebSettings

log = logging.getLogger("kubmesh.web")
SEND_BUFFER_BYTES = 64 * 1024
SOCKET_TIMEOUT_S = 60.0  # longer than the stream's heartbeat, so a live idle stream never hits it


class PhoneHandler(WSGIHandler):
    """gevent's handler, with a bounded send buffer and a timeout on every connection."""

    def handle(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        self.socket.settimeout(SOCKET_TIMEOUT_S)
        super().handle()


def serve(settings: WebSettings) -> int:
    bridge = FarmBridge(Topics(settings.base_topic), silence_s=settings.health_silence_s)
    app = create_app(settings, bridge)
    server = WSGIServer((settings.host, settings.port), app, log=None, error_log=log, handler_class=PhoneHandler)
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
