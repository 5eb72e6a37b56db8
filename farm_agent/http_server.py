"""A small HTTP/1.1 server on asyncio streams, for the agent's few GET routes.

The agent serves three documents to probes and Prometheus on a box with little memory; a web
framework costs it about 12 MB of resident memory for that. This one answers ``GET`` and ``HEAD``
with one response per connection (``Connection: close``), and bounds what a client may send (the
request head, 16 kB) and how long it may take to send it (10 s): a slow or oversized client gets a
4xx or is closed, and never holds the agent up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger("kubmesh.agent.http")

HEAD_LIMIT = 16 * 1024
HEAD_TIMEOUT_S = 10.0
JSON = "application/json; charset=utf-8"


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = JSON


def json_response(document: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(document, ensure_ascii=False).encode())


Route = Callable[[], Awaitable[Response]]


class HttpServer:
    def __init__(self, routes: Mapping[str, Route]) -> None:
        self.routes = dict(routes)
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, host, port, limit=HEAD_LIMIT)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)
            response, method = await self._answer(head)
            writer.write(_encode(response, with_body=method != "HEAD"))
            await writer.drain()
        except asyncio.LimitOverrunError:
            writer.write(_encode(_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE), with_body=True))
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass  # the client went away or was too slow: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, head: bytes) -> tuple[Response, str]:
        try:
            method, target, version = head.split(b"\r\n", 1)[0].decode("ascii").split(" ")
        except (UnicodeDecodeError, ValueError):
            return _error(HTTPStatus.BAD_REQUEST), "GET"
        if not version.startswith("HTTP/1."):
            return _error(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED), method
        if method not in ("GET", "HEAD"):
            return _error(HTTPStatus.METHOD_NOT_ALLOWED), method
        route = self.routes.get(urlsplit(target).path)
        if route is None:
            return _error(HTTPStatus.NOT_FOUND), method
        try:
            return await route(), method
        except Exception:
            log.exception("GET %s failed", urlsplit(target).path)
            return _error(HTTPStatus.INTERNAL_SERVER_ERROR), method


def _error(status: HTTPStatus) -> Response:
    return json_response({"error": status.phrase.lower()}, status)


def _encode(response: Response, with_body: bool) -> bytes:
    status = HTTPStatus(response.status)
    head = (f"HTTP/1.1 {status.value} {status.phrase}\r\nContent-Type: {response.content_type}\r\n"
            f"Content-Length: {len(response.body)}\r\nConnection: close\r\n")
    if status is HTTPStatus.METHOD_NOT_ALLOWED:
        head += "Allow: GET, HEAD\r\n"
    return head.encode() + b"\r\n" + (response.body if with_body else b"")
