"""Delivering a message through one channel URL: Apprise for the ~100 services it knows (Telegram, ntfy,
e-mail, Matrix, webhooks, SMS gateways …) and Web Push; retried with backoff, off the event loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from dataclasses import dataclass

import apprise

from discovery.alerting import webpush
from discovery.alerting.compose import Message
from discovery.alerting.kinds import Severity

log = logging.getLogger("kubmesh.discovery.alerting")
SEND_WORKERS = 16  # sends wait on the network, not the CPU: an alarm storm needs many at once


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


def display(url: str) -> str:
    """The URL with its secrets hidden, for lists, logs and the record of steps."""
    if webpush.is_webpush(url):
        return webpush.display(url)
    plugin = apprise.Apprise.instantiate(url)
    return str(plugin.url(privacy=True)) if plugin is not None else url.split("://", 1)[0] + "://…"


def send_apprise(url: str, message: Message) -> None:
    """Blocking: run it on a worker thread."""
    notifier = apprise.Apprise()
    if not notifier.add(url):
        raise ChannelError("not a channel URL Apprise knows")
    kind = apprise.NotifyType.FAILURE if message.severity is Severity.CRITICAL else apprise.NotifyType.WARNING
    if not message.alert_ids and message.farm_id is None:
        kind = apprise.NotifyType.INFO
    with apprise.LogCapture(level=logging.WARNING) as captured:
        ok = notifier.notify(title=message.title, body=message.body, notify_type=kind)
        reasons = [line.strip() for line in captured.getvalue().splitlines() if line.strip()]
    if not ok:
        raise ChannelError(reasons[-1].split(" - ", 2)[-1] if reasons else "not delivered")


class Channels:
    """Sends through channel URLs: each attempt on a worker thread, the waits between them on the loop."""

    def __init__(self, push: webpush.WebPushSender | None, *, retries: int = 3, backoff: float = 1.0) -> None:
        self.push = push
        self.retries = retries
        self.backoff = backoff
        self._executor = concurrent.futures.ThreadPoolExecutor(SEND_WORKERS, thread_name_prefix="alert-send")

    async def deliver(self, url: str, message: Message) -> Delivery:
        loop = asyncio.get_running_loop()
        error = "not tried"
        for attempt in range(1, self.retries + 2):
            try:
                await loop.run_in_executor(self._executor, self._send, url, message)
                return Delivery(True, attempt)
            except (ChannelError, webpush.PushFailed, webpush.SubscriptionError) as exc:
                error = str(exc)
            except Exception as exc:  # a plug-in's own fault is a failed delivery, not a dead node
                log.exception("channel %s failed", display(url))
                error = f"{type(exc).__name__}: {exc}"
            if attempt <= self.retries:
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
        return Delivery(False, self.retries + 1, error)

    def _send(self, url: str, message: Message) -> None:
        if webpush.is_webpush(url):
            if self.push is None:
                raise ChannelError("Web Push is not set up on this node")
            self.push.send(url, message)
        else:
            send_apprise(url, message)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
