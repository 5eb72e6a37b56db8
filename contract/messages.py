"""The topic-to-model map, and decoding a message once where it enters a process.

:func:`decode_message` turns a topic and its payload into a typed :class:`FarmMessage` (or a
:class:`DiscoveryStatus`), or raises :class:`MessageError` with the reason. It is total: no payload,
however odd, makes it raise anything else, so a consumer that catches ``MessageError`` cannot be
taken down by what a client publishes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel

from contract.payloads import (
    Ack,
    Alarms,
    AlertAck,
    Committed,
    Event,
    FarmAlerts,
    Heartbeat,
    Meta,
    PayloadError,
    Reading,
    SetCommand,
    Status,
    decode,
    decode_set_command,
)
from contract.topics import ALERTS_ACK, FarmTopic, InvalidTopic, Topics

FarmPayload = Status | Meta | Heartbeat | Reading | Alarms | Event | Ack | SetCommand

# What each farm topic carries (``set/{name}`` is a SetCommand, decoded by its own rule).
MODELS: dict[FarmTopic, type[BaseModel]] = {
    FarmTopic.STATUS: Status,
    FarmTopic.META: Meta,
    FarmTopic.HEARTBEAT: Heartbeat,
    FarmTopic.STATE: Reading,
    FarmTopic.BACKLOG: Reading,
    FarmTopic.ALARMS: Alarms,
    FarmTopic.EVENTS: Event,
    FarmTopic.ACK: Ack,
    FarmTopic.SET: SetCommand,
}

P = TypeVar("P", bound=BaseModel)


class MessageError(ValueError):
    """A message that is not of the contract: its topic or payload; the text says which and why."""

    def __init__(self, topic: str, reason: str, farm_id: str | None = None) -> None:
        super().__init__(f"{topic}: {reason}")
        self.topic = topic
        self.reason = reason
        self.farm_id = farm_id


@dataclass(frozen=True)
class FarmMessage(Generic[P]):
    """A farm topic's payload, decoded; ``payload`` is None for an empty payload (a retained message cleared)."""

    farm_id: str
    kind: FarmTopic
    payload: P | None
    retained: bool = False
    name: str | None = None  # the value name of a set/{name} topic
    size: int = 0  # bytes on the wire


@dataclass(frozen=True)
class DiscoveryStatus:
    online: bool
    retained: bool = False


@dataclass(frozen=True)
class AlertAckMessage:
    """``{base}/alerts/{farm}/ack``: an operator acknowledging the farm's alerts."""

    farm_id: str
    payload: AlertAck
    retained: bool = False


@dataclass(frozen=True)
class AlertsMessage:
    """``{base}/alerts/{farm}``: the farm's open alerts as the discovery node publishes them (None: cleared)."""

    farm_id: str
    payload: FarmAlerts | None
    retained: bool = False


@dataclass(frozen=True)
class CommittedMark:
    """The history's confirmation to ``farm_id``: its readings up to ``mark.seq`` are stored."""

    farm_id: str
    mark: Committed
    retained: bool = False


Message = FarmMessage[BaseModel] | DiscoveryStatus | AlertAckMessage | AlertsMessage


def decode_message(topics: Topics, topic: str, payload: bytes, retained: bool = False) -> Message:
    """Decode ``payload`` of ``topic`` by the contract, or raise :class:`MessageError`."""
    if topic == topics.discovery_status():
        return DiscoveryStatus(online=payload == b"online", retained=retained)
    if topic.startswith(topics.alerts_prefix()):
        return _decode_alerts(topics, topic, payload, retained)
    try:
        parsed = topics.parse(topic)
    except InvalidTopic as exc:
        raise MessageError(topic, str(exc)) from None
    if not payload:
        return FarmMessage(parsed.farm_id, parsed.kind, None, retained, parsed.name, 0)
    try:
        model = decode_set_command(payload) if parsed.kind is FarmTopic.SET else decode(MODELS[parsed.kind], payload)
    except PayloadError as exc:
        raise MessageError(topic, str(exc), parsed.farm_id) from None
    except Exception as exc:  # a validator's own fault must not escape: the decode path is total
        raise MessageError(topic, f"undecodable payload ({type(exc).__name__})", parsed.farm_id) from None
    return FarmMessage(parsed.farm_id, parsed.kind, model, retained, parsed.name, len(payload))


def _decode_alerts(topics: Topics, topic: str, payload: bytes, retained: bool) -> AlertAckMessage | AlertsMessage:
    """The alerts topics are not farm topics: their errors name no farm kind (``farm_id`` stays None)."""
    try:
        if topic.endswith("/" + ALERTS_ACK):
            return AlertAckMessage(topics.parse_alerts_ack(topic), decode(AlertAck, payload), retained)
        farm_id = topics.parse_alerts(topic)
        return AlertsMessage(farm_id, decode(FarmAlerts, payload) if payload else None, retained)
    except (InvalidTopic, PayloadError) as exc:
        raise MessageError(topic, str(exc)) from None
    except Exception as exc:  # total, as for farm topics
        raise MessageError(topic, f"undecodable payload ({type(exc).__name__})") from None


def decode_committed(topics: Topics, topic: str, payload: bytes, retained: bool = False) -> CommittedMark:
    """Decode the history's confirmation to a farm (``{base}/discovery/committed/{farm}``), or raise
    :class:`MessageError`; only farms read these, so :func:`decode_message` leaves them out."""
    try:
        farm_id = topics.committed_farm(topic)
    except InvalidTopic as exc:
        raise MessageError(topic, str(exc)) from None
    if farm_id is None:
        raise MessageError(topic, "not a committed topic")
    try:
        return CommittedMark(farm_id, decode(Committed, payload), retained)
    except PayloadError as exc:
        raise MessageError(topic, str(exc), farm_id) from None
    except Exception as exc:  # total, as decode_message
        raise MessageError(topic, f"undecodable payload ({type(exc).__name__})", farm_id) from None
