"""The agent's extension host and its small HTTP server, in process: isolation of a failing extension,
routing of messages by subscription, and what the server answers to requests it does not serve."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

import pytest
from pydantic import BaseModel

from contract.payloads import Alarms, SmsStatus
from farm_agent.agent import FarmAgent
from farm_agent.extension import Extension, Extensions, Inbound, Polled
from farm_agent.extensions import EXTENSIONS
from farm_agent.http_server import HEAD_LIMIT, HttpServer, json_response
from tests.helpers import free_port

POLL = Polled(ts=datetime(2026, 12, 1, tzinfo=UTC), seconds=0.01, status={}, previous=None, reading=None,
              alarms_before=None, alarms=Alarms(ts=datetime(2026, 12, 1, tzinfo=UTC)))


def fake_agent() -> FarmAgent:
    return cast(FarmAgent, SimpleNamespace(farm_id="farm-x", settings=SimpleNamespace()))


class Recorder(Extension):
    name = "recorder"

    def __init__(self, agent: FarmAgent) -> None:
        super().__init__(agent)
        self.seen: list[str] = []

    def subscriptions(self) -> Sequence[str]:
        return ("kub/farms/farm-x/set/+",)

    async def on_poll(self, poll: Polled) -> None:
        self.seen.append("poll")

    async def on_message(self, message: Inbound) -> None:
        self.seen.append(message.topic)


class Broken(Extension):
    name = "broken"

    async def on_poll(self, poll: Polled) -> None:
        raise RuntimeError("a bug in one feature")


class WontStart(Recorder):
    name = "wont-start"

    async def start(self) -> None:
        raise OSError("its file cannot be opened")


def test_an_extension_that_raises_is_logged_and_the_others_go_on(caplog: pytest.LogCaptureFixture) -> None:
    host = Extensions([Broken, Recorder], fake_agent())

    async def run() -> None:
        await host.start()
        await host.poll(POLL)
        await host.poll(POLL)

    with caplog.at_level(logging.ERROR, "kubmesh.agent.extensions"):
        asyncio.run(run())
    recorder = cast(Recorder, host.active[1])
    assert recorder.seen == ["poll", "poll"]
    assert host.failures == 2
    assert "extension broken failed in on_poll" in caplog.text


def test_an_extension_that_fails_to_start_is_left_out() -> None:
    host = Extensions([WontStart, Recorder], fake_agent())
    asyncio.run(host.start())
    assert [extension.name for extension in host.active] == ["recorder"]
    assert host.failures == 1


def test_messages_go_only_to_the_extensions_that_subscribed() -> None:
    host = Extensions([Recorder, Broken], fake_agent())

    async def run() -> None:
        await host.start()
        await host.message(Inbound("kub/farms/farm-x/set/reset_alarms", b"1", retained=False))
        await host.message(Inbound("homeassistant/status", b"online", retained=False))

    asyncio.run(run())
    recorder = cast(Recorder, host.active[0])
    assert recorder.seen == ["kub/farms/farm-x/set/reset_alarms"] and host.failures == 0


class Part(Extension):
    name = "part"

    def status(self) -> Mapping[str, BaseModel]:
        return {"sms": SmsStatus(device="/dev/ttyUSB2", ok=True)}


class BrokenPart(Extension):
    name = "broken-part"

    def status(self) -> Mapping[str, BaseModel]:
        raise RuntimeError("a bug in one feature's status")


def test_a_status_part_that_raises_leaves_the_others_in_health_and_heartbeat() -> None:
    host = Extensions([BrokenPart, Part], fake_agent())
    assert host.status() == {"sms": SmsStatus(device="/dev/ttyUSB2", ok=True)}
    assert host.failures == 1


def test_every_shipped_extension_has_a_unique_name() -> None:
    names = [kind.name for kind in EXTENSIONS]
    assert len(names) == len(set(names)) == len(EXTENSIONS)


async def _exchange(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    return answer


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", b"200 OK"),
    (b"HEAD /health HTTP/1.1\r\n\r\n", b"200 OK"),
    (b"GET /health?probe=1 HTTP/1.0\r\n\r\n", b"200 OK"),
    (b"GET /nowhere HTTP/1.1\r\n\r\n", b"404 Not Found"),
    (b"POST /health HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", b"405 Method Not Allowed"),
    (b"GARBAGE\r\n\r\n", b"400 Bad Request"),
    (b"GET /health SPDY/3\r\n\r\n", b"505 HTTP Version Not Supported"),
    (b"GET /\xff HTTP/1.1\r\n\r\n", b"400 Bad Request"),
    (b"GET /health HTTP/1.1\r\nX: " + b"a" * HEAD_LIMIT + b"\r\n\r\n", b"431 Request Header Fields Too Large"),
    (b"GET /boom HTTP/1.1\r\n\r\n", b"500 Internal Server Error"),
])
def test_the_http_server_answers_what_it_serves_and_refuses_the_rest(request_bytes: bytes, status: bytes) -> None:
    async def health() -> Any:
        return json_response({"status": "ok"})

    async def boom() -> Any:
        raise RuntimeError("a route with a bug")

    async def run() -> bytes:
        server = HttpServer({"/health": health, "/boom": boom})
        port = free_port()
        await server.start("127.0.0.1", port)
        try:
            return await _exchange(port, request_bytes)
        finally:
            await server.close()

    answer = asyncio.run(run())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 " + status), head
    assert b"Connection: close" in head
    if request_bytes.startswith(b"HEAD"):
        assert body == b""
    elif status == b"200 OK":
        assert body == b'{"status": "ok"}'
