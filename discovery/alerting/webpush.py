"""Web Push to the installed phone app: VAPID keys in the data dir, subscriptions kept as channel URLs.

A browser's subscription (its push service endpoint and its two keys) is kept as the channel URL
``webpush+https://push.example/…#p256dh=…&auth=…``, so a Web Push channel is stored, listed and removed
like any Apprise URL. The payload is encrypted for the subscription (RFC 8291, aes128gcm) by pywebpush
and signed with the node's VAPID key (RFC 8292), which is made on first use.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from py_vapid import Vapid
from pywebpush import WebPushException, webpush

from discovery.alerting.compose import Message

SCHEME = "webpush+"
VAPID_FILE = "vapid_private.pem"
TTL_S = 24 * 3600  # a phone that is off for the night still gets the alert in the morning


class SubscriptionError(ValueError):
    """A Web Push channel URL that does not hold a subscription."""


class PushFailed(RuntimeError):
    """The push service refused or could not be reached; the message says which."""


@dataclass(frozen=True)
class VapidKeys:
    private_key_file: Path
    public_key: str  # base64url of the uncompressed point: the browser's applicationServerKey


def vapid_keys(data_dir: Path) -> VapidKeys:
    """The node's VAPID key pair, made on first use and kept (mode 0600) in the data dir."""
    path = data_dir / VAPID_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        vapid = Vapid()
        vapid.generate_keys()
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(vapid.private_pem())
        os.replace(tmp, path)
    vapid = Vapid.from_file(str(path))
    point = vapid.public_key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    return VapidKeys(path, base64.urlsafe_b64encode(point).rstrip(b"=").decode())


def subscription_url(endpoint: str, p256dh: str, auth: str) -> str:
    parsed = urllib.parse.urlsplit(endpoint)
    if parsed.scheme not in ("https", "http") or not parsed.netloc:
        raise SubscriptionError(f"a push endpoint is an https URL, not {endpoint!r}")
    return f"{SCHEME}{endpoint}#{urllib.parse.urlencode({'p256dh': p256dh, 'auth': auth})}"


def is_webpush(url: str) -> bool:
    return url.startswith(SCHEME)


def subscription(url: str) -> dict[str, Any]:
    """The ``subscription_info`` pywebpush wants, from a channel URL."""
    endpoint, _, fragment = url.removeprefix(SCHEME).partition("#")
    keys = dict(urllib.parse.parse_qsl(fragment))
    if not is_webpush(url) or not endpoint or not keys.get("p256dh") or not keys.get("auth"):
        raise SubscriptionError("a Web Push channel is webpush+ENDPOINT#p256dh=KEY&auth=SECRET")
    return {"endpoint": endpoint, "keys": {"p256dh": keys["p256dh"], "auth": keys["auth"]}}


def display(url: str) -> str:
    """The channel without its keys, for lists and logs."""
    return url.partition("#")[0]


class WebPushSender:
    def __init__(self, keys: VapidKeys, contact: str = "mailto:kubmesh@localhost", timeout: float = 10.0) -> None:
        self.keys = keys
        self.contact = contact
        self.timeout = timeout

    def send(self, url: str, message: Message) -> None:
        """Blocking: run it on a worker thread."""
        payload = json.dumps({"title": message.title, "body": message.body, "severity": message.severity.value,
                              "farm_id": message.farm_id, "alerts": list(message.alert_ids)}, ensure_ascii=False)
        try:
            webpush(subscription(url), payload, vapid_private_key=str(self.keys.private_key_file),
                    vapid_claims={"sub": self.contact}, timeout=self.timeout, ttl=TTL_S,
                    headers={"Urgency": "high" if message.severity.value == "critical" else "normal"})
        except WebPushException as exc:
            status = getattr(exc.response, "status_code", None)
            raise PushFailed(f"push service answered {status}" if status else str(exc)) from None
        except OSError as exc:
            raise PushFailed(f"push service unreachable: {exc}") from None
