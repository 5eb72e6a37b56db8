"""Delivering a message through one channel URL: Apprise for the ~100 services it knows (Telegram, ntfy,
e-mail, Matrix, webhooks, SMS gateways …) and Web Push; retried with backoff.

Sending costs CPU (URL parsing, HTTP, TLS, payload encryption): a few milliseconds a message, which in
an alarm storm of a thousand farms would be seconds of the node's interpreter taken from its broker.
So the sends run in sender processes of their own (``processes``), each with threads for the network
waits; a round's messages go to them in chunks, and only the waits between retries stay on the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import multiprocessing
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import apprise

from discovery.alerting import webpush
from discovery.alerting.compose import Message
from discovery.alerting.kinds import Severity

log = logging.getLogger("kubmesh.discovery.alerting")
SEND_THREADS = 16  # per sender: sends wait on the network, not the CPU
CHUNK = 32  # messages handed to a sender at once
SENDER_NICENESS = 10


class ChannelError(RuntimeError):
    """A channel that did not take the message; the text says why."""


@dataclass(frozen=True)
class Delivery:
    ok: bool
    attempts: int
    error: str | None = None


def check_url(url: str) -> str | None:
    """Why a channel URL cannot be used, or None when it can."""
    if webpush.is_webpush(url):
        try:
            webpush.subscription(url)
        except webpush.SubscriptionError as exc:
            return str(exc)
        return None
    if apprise.Apprise.instantiate(url) is None:
        return f"not a channel URL Apprise knows: {display(url)}"
    return None


@functools.lru_cache(maxsize=4096)
def display(url: str) -> str:
    """The URL with its secrets hidden, for lists, logs and the record of steps (parsed once per URL)."""
    if webpush.is_webpush(url):
        return webpush.display(url)
    plugin = apprise.Apprise.instantiate(url)
    return str(plugin.url(privacy=True)) if plugin is not None else url.split("://", 1)[0] + "://…"


class _ThreadLog(logging.Handler):
    """Apprise says why a send failed only in its log: keep each thread's lines apart."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: dict[int, list[str]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.setdefault(threading.get_ident(), []).append(record.getMessage())

    def take(self) -> list[str]:
        return self.lines.pop(threading.get_ident(), [])


_APPRISE_LOG = _ThreadLog()
logging.getLogger("apprise").addHandler(_APPRISE_LOG)


def send_apprise(url: str, message: Message) -> None:
    """Blocking: one send through the URL's Apprise plug-in."""
    plugin = apprise.Apprise.instantiate(url)
    if plugin is None:
        raise ChannelError("not a channel URL Apprise knows")
    kind = apprise.NotifyType.FAILURE if message.severity is Severity.CRITICAL else apprise.NotifyType.WARNING
    if message.farm_id is None:
        kind = apprise.NotifyType.INFO
    _APPRISE_LOG.take()
    if not plugin.notify(title=message.title, body=message.body, notify_type=kind):
        reasons = _APPRISE_LOG.take()
        raise ChannelError(reasons[-1] if reasons else "not delivered")


def send_one(url: str, message: Message, push: webpush.WebPushSender | None) -> str | None:
    """Blocking: one attempt; the reason it failed, or None."""
    try:
        if webpush.is_webpush(url):
            if push is None:
                raise ChannelError("Web Push is not set up on this node")
            push.send(url, message)
        else:
            send_apprise(url, message)
    except (ChannelError, webpush.PushFailed, webpush.SubscriptionError) as exc:
        return str(exc)
    except Exception as exc:  # a plug-in's own fault is a failed delivery, not a dead node
        log.exception("channel %s failed", display(url))
        return f"{type(exc).__name__}: {exc}"
    return None


# ---- the sender processes ------------------------------------------------------------------------------

_sender_push: webpush.WebPushSender | None = None
_sender_threads: concurrent.futures.ThreadPoolExecutor | None = None


def _start_sender(vapid_file: str | None, public_key: str | None) -> None:
    global _sender_push, _sender_threads
    # the node's broker comes first when both want the CPU: a storm's messages may wait milliseconds, the
    # farms' readings through the broker should not
    os.nice(SENDER_NICENESS)
    if vapid_file and public_key:
        _sender_push = webpush.WebPushSender(webpush.VapidKeys(Path(vapid_file), public_key))
    _sender_threads = concurrent.futures.ThreadPoolExecutor(SEND_THREADS, thread_name_prefix="alert-send")


def _ready() -> bool:
    return True


def _send_chunk(items: Sequence[tuple[str, Message]]) -> list[str | None]:
    assert _sender_threads is not None
    return list(_sender_threads.map(lambda item: send_one(item[0], item[1], _sender_push), items))


class Channels:
    """Sends through channel URLs: in ``processes`` sender processes (0: threads of this process)."""

    def __init__(self, push: webpush.WebPushSender | None, *, retries: int = 3, backoff: float = 1.0,
                 processes: int = 0) -> None:
        self.push = push
        self.retries = retries
        self.backoff = backoff
        self._pool: concurrent.futures.Executor
        if processes > 0:
            keys = push.keys if push is not None else None
            self._pool = concurrent.futures.ProcessPoolExecutor(
                processes, mp_context=multiprocessing.get_context("spawn"), initializer=_start_sender,
                initargs=(str(keys.private_key_file) if keys else None, keys.public_key if keys else None))
        else:
            self._pool = concurrent.futures.ThreadPoolExecutor(SEND_THREADS, thread_name_prefix="alert-send")
        self._processes = processes
        self._queue: list[tuple[str, Message, asyncio.Future[str | None]]] = []

    async def warm_up(self) -> None:
        """Start the sender processes and load Apprise's plug-ins (a second of imports, which ``display``
        needs here too) now, off the loop, not in the middle of the first alarm storm."""
        await asyncio.to_thread(apprise.Apprise.instantiate, "json://localhost")
        if self._processes:
            await asyncio.gather(*(asyncio.wrap_future(self._pool.submit(_ready)) for _ in range(self._processes)))

    async def deliver(self, url: str, message: Message) -> Delivery:
        error: str | None = "not tried"
        for attempt in range(1, self.retries + 2):
            error = await self._attempt(url, message)
            if error is None:
                return Delivery(True, attempt)
            if attempt <= self.retries:
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
        return Delivery(False, self.retries + 1, error)

    async def _attempt(self, url: str, message: Message) -> str | None:
        loop = asyncio.get_running_loop()
        if not self._processes:
            return await loop.run_in_executor(self._pool, send_one, url, message, self.push)
        future: asyncio.Future[str | None] = loop.create_future()
        if not self._queue:
            loop.call_soon(self._hand_over)  # what the round adds before the loop comes back goes along
        self._queue.append((url, message, future))
        return await future

    def _hand_over(self) -> None:
        queue, self._queue = self._queue, []
        for start in range(0, len(queue), CHUNK):
            chunk = queue[start:start + CHUNK]
            try:
                done = asyncio.wrap_future(self._pool.submit(_send_chunk, [(url, msg) for url, msg, _ in chunk]))
            except RuntimeError as exc:  # the pool is shut down: the node is stopping
                for _, _, future in chunk:
                    future.set_result(f"not sent: {exc}")
                continue
            done.add_done_callback(functools.partial(_settle, chunk))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _settle(chunk: list[tuple[str, Message, asyncio.Future[str | None]]],
            result: asyncio.Future[list[str | None]]) -> None:
    if result.cancelled() or result.exception() is not None:
        reason = "sender process failed" if result.cancelled() else f"sender process failed: {result.exception()}"
        errors: list[str | None] = [reason] * len(chunk)
    else:
        errors = result.result()
    for (_, _, future), error in zip(chunk, errors, strict=True):
        if not future.done():
            future.set_result(error)
