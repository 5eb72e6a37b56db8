"""MQTT 3.1.1 packets as bytes: what the broker's connections (``broker/fastpath.py``) read and write.

Only what a broker needs: the fixed header's remaining length, the acknowledgements, the head of
a PUBLISH (shared by every copy of one message), the strings of a packet and the CONNECT.
"""

from __future__ import annotations

import math

from broker.amqtt_adapter import LeanSession, gen_client_id

PROTOCOL_LEVEL = 4  # MQTT 3.1.1
CONNECT, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 3, 4, 5, 6, 7
SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT = 8, 10, 12, 14
ACCEPTED, BAD_PROTOCOL, ID_REJECTED, BAD_CREDENTIALS, NOT_AUTHORIZED = 0, 1, 2, 4, 5
PINGRESP_PACKET = b"\xd0\x00"
KEEPALIVE_GRACE = 1.5  # MQTT 3.1.1: disconnect after one and a half keepalive periods of silence
MAX_CONNECT = 10 + 5 * (2 + 65535)  # its fixed fields and five strings of at most 65,535 bytes (§3.1)


class ProtocolError(Exception):
    """A packet MQTT 3.1.1 does not allow; the connection is closed (§4.8)."""


def remaining_length(n: int) -> bytes:
    """MQTT's remaining length: seven bits a byte, least significant first."""
    if n < 128:
        return bytes((n,))
    out = bytearray()
    while True:
        digit, n = n & 0x7F, n >> 7
        out.append(digit | 0x80 if n else digit)
        if not n:
            return bytes(out)


def ack(kind: int, packet_id: int) -> bytes:
    return bytes((kind, 2, packet_id >> 8, packet_id & 0xFF))


def publish_head(topic: bytes, size: int, qos: int, retain: bool, dup: bool = False) -> bytes:
    """A PUBLISH packet up to its packet id: what every copy of one message at one QoS shares."""
    remaining = 2 + len(topic) + (2 if qos else 0) + size
    flags = 0x30 | qos << 1 | retain | (0x08 if dup else 0)
    return bytes((flags,)) + remaining_length(remaining) + len(topic).to_bytes(2, "big") + topic


def read_string(body: bytes, pos: int) -> tuple[bytes, int]:
    end = pos + 2 + (body[pos] << 8 | body[pos + 1])
    if end > len(body):
        raise ProtocolError("a string runs past the end of its packet")
    return body[pos + 2:end], end


def read_text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError("a string is not UTF-8 (§1.5.3)") from exc


def parse_connect(body: bytes) -> LeanSession | int:
    """The session a CONNECT asks for, or the CONNACK code that refuses it (§3.1)."""
    name, pos = read_string(body, 0)
    if name != b"MQTT":
        raise ProtocolError(f"the protocol name {name!r} is not MQTT (§3.1.2.1)")
    level, flags = body[pos], body[pos + 1]
    keepalive = body[pos + 2] << 8 | body[pos + 3]
    pos += 4
    if level != PROTOCOL_LEVEL:
        return BAD_PROTOCOL
    if flags & 0x01:
        raise ProtocolError("the reserved CONNECT flag is set (§3.1.2.3)")
    will, will_qos = bool(flags & 0x04), flags >> 3 & 3
    if will_qos == 3 or (not will and (will_qos or flags & 0x20)):
        raise ProtocolError("will QoS or retain without a will, or will QoS 3 (§3.1.2.6)")
    session = LeanSession()
    raw, pos = read_string(body, pos)
    session.client_id = read_text(raw)
    session.clean_session = bool(flags & 0x02)
    if will:
        raw, pos = read_string(body, pos)
        session.will_topic = read_text(raw)
        if not session.will_topic or "+" in session.will_topic or "#" in session.will_topic:
            raise ProtocolError(f"the will topic {session.will_topic!r} is not a topic name (§4.7)")
        session.will_message, pos = read_string(body, pos)
        session.will_flag, session.will_qos, session.will_retain = True, will_qos, bool(flags & 0x20)
    if flags & 0x80:
        raw, pos = read_string(body, pos)
        session.username = read_text(raw)
    elif flags & 0x40:
        return BAD_CREDENTIALS  # a password without a username (§3.1.2.9)
    if flags & 0x40:
        raw, pos = read_string(body, pos)
        session.password = raw.decode("utf-8", "replace")
    if not session.client_id:
        if not session.clean_session:
            return ID_REJECTED  # §3.1.3-8
        session.client_id = gen_client_id()
    session.keep_alive = math.ceil(keepalive * KEEPALIVE_GRACE)
    return session
