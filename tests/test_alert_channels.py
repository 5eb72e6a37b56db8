"""Alert channels against real local receivers: e-mail to an SMTP server, Apprise's json:// webhook,
ntfy's publish API, and Web Push to a local push endpoint whose payload decrypts with the
subscription's keys; failures retried with backoff and reported."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path

import http_ece
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from discovery.alerting.channels import Channels, check_url, display
from discovery.alerting.compose import Message
from discovery.alerting.kinds import Severity
from discovery.alerting.webpush import WebPushSender, subscription_url, vapid_keys
from tests.alert_receivers import HttpReceiver, SmtpReceiver
from tests.helpers import free_port

MESSAGE = Message("[КРИТИЧНО] Птичник №1: Авария контроллера", "Птичник №1 (farm-001)\nНОВАЯ: авария, бит 3",
                  Severity.CRITICAL, "farm-001", ("a1",))


@pytest.fixture
def http() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    receiver = SmtpReceiver().start()
    yield receiver
    receiver.stop()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


async def test_email_reaches_a_local_smtp_server_in_russian(smtp: SmtpReceiver) -> None:
    delivery = await Channels(None, retries=0).deliver(smtp.url(), MESSAGE)
    assert delivery.ok, delivery.error
    [(_, mail)] = smtp.messages
    assert mail["Subject"] == MESSAGE.title and mail["To"] == "farmer@farm.test"
    assert "авария, бит 3" in smtp.texts()[0]


async def test_json_webhook_gets_title_body_and_severity(http: HttpReceiver) -> None:
    delivery = await Channels(None, retries=0).deliver(http.url("json", "/hook"), MESSAGE)
    assert delivery.ok, delivery.error
    [request] = http.on("/hook")
    body = request.json()
    assert (body["title"], body["message"], body["type"]) == (MESSAGE.title, MESSAGE.body, "failure")


async def test_ntfy_publish_api_gets_the_topic_and_message(http: HttpReceiver) -> None:
    delivery = await Channels(None, retries=0).deliver(http.url("ntfy", "/farm-alerts"), MESSAGE)
    assert delivery.ok, delivery.error
    [request] = http.received
    body = request.json()
    assert (body["topic"], body["title"], body["message"]) == ("farm-alerts", MESSAGE.title, MESSAGE.body)


async def test_a_failing_channel_is_retried_with_backoff_then_delivered(http: HttpReceiver) -> None:
    http.fail_next = 2
    delivery = await Channels(None, retries=3, backoff=0.01).deliver(http.url("json", "/hook"), MESSAGE)
    assert (delivery.ok, delivery.attempts) == (True, 3)
    assert len(http.on("/hook")) == 1


async def test_a_dead_channel_is_reported_with_the_reason_after_every_retry() -> None:
    url = f"json://127.0.0.1:{free_port()}/hook"  # nothing listens there
    delivery = await Channels(None, retries=2, backoff=0.01).deliver(url, MESSAGE)
    assert (delivery.ok, delivery.attempts) == (False, 3)
    assert delivery.error and "connection" in delivery.error.lower()


async def test_sender_processes_deliver_a_storm_in_chunks_and_report_each_failure(http: HttpReceiver) -> None:
    channels = Channels(None, retries=0, processes=1)  # as the node sends: off its own interpreter
    dead = f"json://127.0.0.1:{free_port()}/hook"
    try:
        urls = [http.url("json", f"/farm-{i}") for i in range(70)] + [dead]
        deliveries = await asyncio.gather(*(channels.deliver(url, MESSAGE) for url in urls))
    finally:
        channels.close()
    assert all(d.ok for d in deliveries[:-1]) and len(http.received) == 70
    assert not deliveries[-1].ok and "connection" in (deliveries[-1].error or "").lower()


def test_channel_urls_are_checked_and_shown_without_secrets() -> None:
    assert check_url("json://127.0.0.1/hook") is None
    assert check_url("nosuch://x") is not None
    assert check_url("webpush+https://push.example/abc") is not None  # no keys
    assert "secret" not in display("json://user:secret@127.0.0.1/hook")
    assert display("webpush+https://push.example/abc#p256dh=K&auth=S") == "webpush+https://push.example/abc"


async def test_web_push_payload_decrypts_with_the_subscriptions_keys(http: HttpReceiver, tmp_path: Path) -> None:
    browser_key = ec.generate_private_key(ec.SECP256R1())
    auth_secret = os.urandom(16)
    public = browser_key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    url = subscription_url(http.url("http", "/push/phone-1"), b64url(public), b64url(auth_secret))
    keys = vapid_keys(tmp_path)
    assert (tmp_path / "vapid_private.pem").stat().st_mode & 0o777 == 0o600
    assert vapid_keys(tmp_path).public_key == keys.public_key  # made once, then kept

    delivery = await Channels(WebPushSender(keys), retries=0).deliver(url, MESSAGE)
    assert delivery.ok, delivery.error

    [request] = http.on("/push/phone-1")
    assert request.headers["Content-Encoding"] == "aes128gcm"
    plain = http_ece.decrypt(request.body, private_key=browser_key, auth_secret=auth_secret, version="aes128gcm")
    payload = json.loads(plain)
    assert (payload["title"], payload["farm_id"], payload["severity"]) == (MESSAGE.title, "farm-001", "critical")
    # the push service can check the sender: a VAPID JWT signed with the node's key, for this endpoint
    scheme, _, params = request.headers["Authorization"].partition(" ")
    fields = dict(part.strip().split("=", 1) for part in params.split(","))
    assert scheme == "vapid" and fields["k"] == keys.public_key
    header, claims, signature = fields["t"].split(".")
    raw = unb64url(signature)
    node_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(keys.public_key))
    node_key.verify(encode_dss_signature(int.from_bytes(raw[:32]), int.from_bytes(raw[32:])),
                    f"{header}.{claims}".encode(), ec.ECDSA(hashes.SHA256()))
    assert json.loads(unb64url(claims))["aud"] == f"http://127.0.0.1:{http.port}"


async def test_a_push_service_refusal_is_a_failed_delivery(http: HttpReceiver, tmp_path: Path) -> None:
    http.failing_status = 410  # the browser unsubscribed
    browser_key = ec.generate_private_key(ec.SECP256R1())
    public = browser_key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    url = subscription_url(http.url("http", "/push/gone"), b64url(public), b64url(os.urandom(16)))
    delivery = await Channels(WebPushSender(vapid_keys(tmp_path)), retries=0).deliver(url, MESSAGE)
    assert not delivery.ok and delivery.error == "push service answered 410"
