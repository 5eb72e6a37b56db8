"""How every kubmesh service reaches the bus: ``MQTT_URL`` parsing and client construction.

``mqtt://user:password@host:1883`` or ``mqtts://user:password@host:8883?ca_file=/path/ca.pem``.
Async services use aiomqtt; the Flask front end uses a threaded paho client.
Both are built here so that credentials, TLS and the last will are set one way.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, replace
from urllib.parse import parse_qs, quote, unquote, urlsplit

import aiomqtt
import paho.mqtt.client as paho

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


class MqttUrlError(ValueError):
    pass


@dataclass(frozen=True)
class MqttUrl:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None

    @classmethod
    def parse(cls, url: str) -> MqttUrl:
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS:
            raise MqttUrlError(f"MQTT URL must start with mqtt:// or mqtts://, not {url.split(':')[0]!r}")
        try:
            port = parts.port or DEFAULT_PORTS[parts.scheme]
        except ValueError:
            raise MqttUrlError("MQTT URL has an invalid port") from None
        query = parse_qs(parts.query)
        if "ca_file" in query and parts.scheme != "mqtts":
            raise MqttUrlError("ca_file is for TLS: use an mqtts:// URL")
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=parts.scheme == "mqtts",
            ca_file=query.get("ca_file", [None])[0],
        )

    def with_credentials(self, username: str, password: str) -> MqttUrl:
        return replace(self, username=username, password=password)

    def __str__(self) -> str:
        """The URL with its password, for handing to a child process; never log it."""
        auth = ""
        if self.username:
            auth = quote(self.username, safe="")
            if self.password:
                auth += ":" + quote(self.password, safe="")
            auth += "@"
        query = f"?ca_file={quote(self.ca_file)}" if self.ca_file else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{auth}{self.host}:{self.port}{query}"

    def redacted(self) -> str:
        user = f"{self.username}:***@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"

    def ssl_context(self) -> ssl.SSLContext | None:
        """Verifies the broker's certificate and host name against ``ca_file`` (or the system's CAs)."""
        if not self.tls:
            return None
        try:
            return ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise MqttUrlError(f"cannot use ca_file {self.ca_file!r}: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class LastWill:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


def async_client(
    url: MqttUrl,
    client_id: str,
    *,
    will: LastWill | None = None,
    keepalive: int = 30,
    clean_session: bool = True,
    manual_ack: bool = False,
) -> aiomqtt.Client:
    """An aiomqtt client for MQTT 3.1.1, which every broker we support speaks.

    With ``manual_ack`` a QoS 1 message is acknowledged only when the caller calls :func:`acknowledge`
    (after it has stored it), so a crash before that leaves it with the broker, to be sent again.
    """
    client = aiomqtt.Client(
        url.host,
        url.port,
        username=url.username,
        password=url.password,
        identifier=client_id,
        protocol=aiomqtt.ProtocolVersion.V311,
        will=aiomqtt.Will(will.topic, will.payload, will.qos, will.retain) if will else None,
        keepalive=keepalive,
        clean_session=clean_session,
        tls_context=url.ssl_context(),
        timeout=10,
    )
    if manual_ack:
        # aiomqtt has no option for it; paho, under it, has the switch (and must have it before connecting)
        client._client.manual_ack_set(True)
    return client


def acknowledge(client: aiomqtt.Client, mid: int, qos: int) -> None:
    """Send the PUBACK of a message received with ``manual_ack``."""
    client._client.ack(mid, qos)


def threaded_client(url: MqttUrl, client_id: str, *, keepalive: int = 30) -> paho.Client:
    """A paho client for code outside an event loop; the caller sets callbacks and starts its loop."""
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv311)
    if url.username:
        client.username_pw_set(url.username, url.password)
    context = url.ssl_context()
    if context:
        client.tls_set_context(context)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    client.connect_async(url.host, url.port, keepalive=keepalive)
    return client
