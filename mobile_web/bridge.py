"""One MQTT subscription per process, fanned out to every open browser stream.

The bridge keeps the newest status, meta, heartbeat, state and alarms of each
farm (what a page needs to render) and turns every message into a numbered
event for the Server-Sent-Events streams. Each stream has a small bounded
queue and the hub never waits on one: a browser too slow (or dead) to empty its
queue has its stream closed, never holds up the others. The last events are
kept, so a browser that reconnects with ``Last-Event-ID`` gets what it missed.

Every path from a message to a page is total: a message is decoded once, by the contract
(:func:`contract.messages.decode_message`); one that does not fit is dropped, logged and counted,
and any other fault in handling it is caught and counted, so that no payload can stop the MQTT
thread. A farm appears with its first message and goes when its retained ``status`` is cleared (what
``kubmesh farm remove`` does), each told to the streams. paho's loop reconnects by itself whenever the
connection is lost; :meth:`FarmBridge.health` says when the bridge is not receiving.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho

from common.mqtt import MqttUrl, threaded_client
from contract.messages import AlertAckMessage, AlertsMessage, DiscoveryStatus, FarmMessage, MessageError, decode_message
from contract.payloads import Alarms, Event, FarmAlerts, Heartbeat, Meta, Reading, Status
from contract.topics import FarmTopic, Topics

log = logging.getLogger("kubmesh.web.bridge")

# the farm topics a page shows (commands, backlog replays and the rest are not the web's)
SHOWN = (FarmTopic.STATUS, FarmTopic.META, FarmTopic.HEARTBEAT, FarmTopic.STATE, FarmTopic.ALARMS,
         FarmTopic.EVENTS, FarmTopic.ACK)
RECENT_EVENTS = 20
FARM_ADDED = "farm_added"  # stream events of the farm list: a farm's first message, its status cleared
FARM_REMOVED = "farm_removed"
DROP_LOG_INTERVAL_S = 60.0  # a farm's dropped messages are logged once a minute at most, and all counted
DROP_LOG_KEYS = 1000
SILENCE_S = 120.0  # no message for this long and the bridge is not receiving (farms send heartbeats more often)


@dataclass
class FarmView:
    farm_id: str
    status: Status | None = None
    status_received: float | None = None  # wall-clock time the status arrived (a last will's ts is old)
    meta: Meta | None = None
    heartbeat: Heartbeat | None = None
    state: Reading | None = None
    state_received: float | None = None
    alarms: Alarms | None = None
    alerts: FarmAlerts | None = None  # the discovery node's open alerts of the farm
    events: deque[Event] = field(default_factory=lambda: deque(maxlen=RECENT_EVENTS))
    last_seen: float | None = None  # the newest sign of life: a heartbeat's or reading's own time

    @property
    def online(self) -> bool:
        return self.status is not None and self.status.state == "online"

    @property
    def owner_id(self) -> str | None:
        return self.meta.owner_id if self.meta else None

    @property
    def alarm_count(self) -> int:
        return len(self.alarms.active) if self.alarms else 0


@dataclass(frozen=True)
class StreamEvent:
    id: str
    type: str
    farm_id: str | None
    data: str  # JSON

    def encode(self) -> str:
        return f"id: {self.id}\nevent: {self.type}\ndata: {self.data}\n\n"


class Subscriber:
    """One open stream's queue. ``None`` in the queue tells the stream to end."""

    def __init__(self, farm_id: str | None, size: int) -> None:
        self.farm_id = farm_id
        self.queue: queue.Queue[StreamEvent | None] = queue.Queue(maxsize=size)
        self.closed = False

    def wants(self, event: StreamEvent) -> bool:
        return self.farm_id is None or event.farm_id in (None, self.farm_id)

    def offer(self, event: StreamEvent) -> bool:
        """Queue ``event`` without ever waiting; a full queue closes the subscriber instead (returns False)."""
        if self.closed:
            return False
        try:
            self.queue.put_nowait(event)
            return True
        except queue.Full:
            self.close()
            return False

    def close(self) -> None:
        """End the stream: what is queued is dropped, the browser reconnects and catches up by Last-Event-ID."""
        self.closed = True
        while True:
            try:
                self.queue.get_nowait()
            except queue.Empty:
                break
        self.queue.put_nowait(None)


class Hub:
    """Numbered events to many subscribers, with a replay buffer for reconnecting browsers.

    Event ids are ``EPOCH-N``: the epoch changes with every process start, so a browser
    reconnecting to a restarted server (or one that missed more than the buffer holds) is told
    to ``resync`` rather than silently missing events.
    """

    def __init__(self, history: int = 500, queue_size: int = 64) -> None:
        self._lock = threading.Lock()
        self.epoch = format(time.time_ns() // 1_000_000, "x")
        self._next_id = 1
        self._history: deque[tuple[int, StreamEvent]] = deque(maxlen=history)
        self._subscribers: set[Subscriber] = set()
        self.queue_size = queue_size
        self.closed_slow = 0

    def last_id(self) -> str:
        """The id of the newest event: a page rendered now streams from here, missing nothing."""
        with self._lock:
            return f"{self.epoch}-{self._next_id - 1}"

    def publish(self, event_type: str, farm_id: str | None, data: dict[str, Any]) -> None:
        with self._lock:
            number = self._next_id
            self._next_id += 1
            event = StreamEvent(f"{self.epoch}-{number}", event_type, farm_id, json.dumps(data, ensure_ascii=False))
            self._history.append((number, event))
            subscribers = [s for s in self._subscribers if s.wants(event)]
        for subscriber in subscribers:
            if not subscriber.offer(event):
                self._drop_slow(subscriber)

    def _drop_slow(self, subscriber: Subscriber) -> None:
        with self._lock:
            if subscriber not in self._subscribers:
                return
            self._subscribers.discard(subscriber)
            self.closed_slow += 1
        log.info("closed a stream that fell %d events behind", self.queue_size)

    def subscribe(self, farm_id: str | None = None, last_event_id: str | None = None) -> Subscriber:
        """A new subscriber; with ``last_event_id`` it first gets what it missed, or a ``resync`` event."""
        subscriber = Subscriber(farm_id, self.queue_size)
        with self._lock:
            if last_event_id:
                self._replay(subscriber, last_event_id)
            self._subscribers.add(subscriber)
        return subscriber

    def _replay(self, subscriber: Subscriber, last_event_id: str) -> None:
        epoch, _, number_text = last_event_id.partition("-")
        number = int(number_text) if number_text.isdigit() else -1
        oldest = self._history[0][0] if self._history else self._next_id
        missed = [event for n, event in self._history if n > number and subscriber.wants(event)]
        if epoch != self.epoch or not oldest - 1 <= number < self._next_id or len(missed) >= self.queue_size:
            subscriber.offer(StreamEvent(f"{self.epoch}-{self._next_id - 1}", "resync", None, "{}"))
            return
        for event in missed:
            subscriber.offer(event)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        with self._lock:
            self._subscribers.discard(subscriber)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)


@dataclass(frozen=True)
class BridgeHealth:
    connected: bool
    last_message_age_s: float | None  # since the newest message, or since connecting when none came yet
    silence_s: float
    dropped: int  # messages that did not fit the contract
    handler_errors: int  # faults met while handling a message that did

    @property
    def receiving(self) -> bool:
        return self.connected and (self.last_message_age_s is None or self.last_message_age_s <= self.silence_s)

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.receiving else "degraded",
            "broker": "connected" if self.connected else "disconnected",
            "last_message_age_s": None if self.last_message_age_s is None else round(self.last_message_age_s, 1),
            "silence_s": self.silence_s,
            "dropped": self.dropped,
            "handler_errors": self.handler_errors,
        }


class FarmBridge:
    """Farm views fed by MQTT (or by tests through :meth:`handle`), events out through the hub."""

    def __init__(self, topics: Topics, hub: Hub | None = None, silence_s: float = SILENCE_S) -> None:
        self.topics = topics
        self.hub = hub or Hub()
        self.silence_s = silence_s
        self.farms: dict[str, FarmView] = {}
        self.discovery_online: bool | None = None
        self.connected = False
        self.connected_at: float | None = None
        self.last_message: float | None = None
        self.dropped = 0
        self.handler_errors = 0
        self._drops_logged: dict[str | None, tuple[float, int]] = {}  # farm → (last logged, dropped since)
        self._lock = threading.Lock()
        self._client: paho.Client | None = None

    def start(self, url: MqttUrl, client_id: str = "kubmesh-mobile-web", keepalive: int = 30) -> None:
        client = threaded_client(url, client_id, keepalive=keepalive)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client
        client.loop_start()

    def stop(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()

    def publish_command(self, farm_id: str, name: str, payload: bytes) -> bool:
        if self._client is None or not self.connected:
            return False
        return self._client.publish(self.topics.set(farm_id, name), payload, qos=1).rc == paho.MQTT_ERR_SUCCESS

    def publish_alert_ack(self, farm_id: str, payload: bytes) -> bool:
        """``{base}/alerts/{farm}/ack`` for a user; the discovery node checks that they may acknowledge."""
        if self._client is None or not self.connected:
            return False
        return self._client.publish(self.topics.alerts_ack(farm_id), payload, qos=1).rc == paho.MQTT_ERR_SUCCESS

    def health(self, now: float | None = None) -> BridgeHealth:
        now = time.time() if now is None else now
        since = self.last_message if self.last_message is not None else self.connected_at
        return BridgeHealth(self.connected, None if since is None else max(now - since, 0.0), self.silence_s,
                            self.dropped, self.handler_errors)

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any = None) -> None:
        if reason.is_failure:
            log.warning("broker refused the connection: %s", reason)
            return
        self.connected, self.connected_at = True, time.time()
        filters = [self.topics.all_farms(kind) for kind in SHOWN] + [self.topics.discovery_status(),
                                                                     self.topics.alerts_filter()]
        client.subscribe([(f, 1) for f in filters])
        log.info("connected to the broker")

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any = None) -> None:
        self.connected = False
        log.warning("disconnected from the broker: %s; reconnecting", reason)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self.handle(message.topic, bytes(message.payload), bool(message.retain))

    def handle(self, topic: str, payload: bytes, retained: bool = False) -> None:
        """Take one message into the views and the streams; never raises, whatever the message."""
        self.last_message = time.time()
        try:
            decoded = decode_message(self.topics, topic, payload, retained)
        except MessageError as exc:
            self.dropped += 1
            self._log_drop(exc)
            return
        if isinstance(decoded, AlertAckMessage):
            return  # an operator's acknowledgement: the discovery node answers it on the alerts topic
        try:
            if isinstance(decoded, AlertsMessage):
                self._take_alerts(decoded)
                return
            self._take(decoded)
        except Exception:  # a fault here must not end paho's thread: the page would freeze on stale values
            self.handler_errors += 1
            log.exception("could not handle a message on %s", topic)

    def _log_drop(self, error: MessageError) -> None:
        """One line per farm a minute: a farm publishing garbage in a loop must not flood the log."""
        now = time.monotonic()
        logged, since = self._drops_logged.get(error.farm_id, (None, 0))
        if logged is not None and now - logged < DROP_LOG_INTERVAL_S:
            self._drops_logged[error.farm_id] = (logged, since + 1)
            return
        if len(self._drops_logged) >= DROP_LOG_KEYS:  # topics of farms that do not exist: forget, do not grow
            self._drops_logged.clear()
        self._drops_logged[error.farm_id] = (now, 0)
        more = f" ({since} more dropped since the last one logged)" if since else ""
        log.warning("dropped a message: %s%s", error, more)

    def _take_alerts(self, decoded: AlertsMessage) -> None:
        with self._lock:
            view = self.farms.setdefault(decoded.farm_id, FarmView(decoded.farm_id))
            view.alerts = decoded.payload
        alerts = decoded.payload.alerts if decoded.payload else []
        self.hub.publish("alerts", decoded.farm_id, {"farm": decoded.farm_id,
                                                     "alerts": [json.loads(a.model_dump_json()) for a in alerts]})

    def _take(self, decoded: DiscoveryStatus | FarmMessage[Any]) -> None:
        if isinstance(decoded, DiscoveryStatus):
            self.discovery_online = decoded.online
            self.hub.publish("discovery", None, {"online": decoded.online})
            return
        message = decoded.payload
        if decoded.kind is FarmTopic.STATUS and message is None:
            self._forget(decoded.farm_id)  # its retained status cleared: the farm was removed (kubmesh farm remove)
            return
        if decoded.kind not in SHOWN or message is None:
            return
        now = time.time()
        profile_changed = False
        with self._lock:
            added = decoded.farm_id not in self.farms
            view = self.farms.setdefault(decoded.farm_id, FarmView(decoded.farm_id))
            if isinstance(message, Heartbeat | Reading):
                # their own ts, not arrival: retained ones arrive at connect time from a farm long gone
                view.last_seen = max(view.last_seen or 0.0, min(message.ts.timestamp(), now))
            if isinstance(message, Status):
                view.status, view.status_received = message, now
            elif isinstance(message, Meta):
                profile_changed = view.meta is not None and view.meta.profile != message.profile
                view.meta = message
            elif isinstance(message, Heartbeat):
                view.heartbeat = message
            elif isinstance(message, Reading):
                view.state, view.state_received = message, now
            elif isinstance(message, Alarms):
                view.alarms = message
            elif isinstance(message, Event):
                view.events.appendleft(message)
        # pydantic's JSON writes a non-finite float as null, which a browser's JSON.parse reads (not "Infinity")
        data = {"farm": decoded.farm_id, **json.loads(message.model_dump_json())}
        self.hub.publish(decoded.kind.value, decoded.farm_id, data)
        if added:  # open farm lists show it at once
            self.hub.publish(FARM_ADDED, decoded.farm_id, {"farm": decoded.farm_id})
        if profile_changed:  # the farm's values or controls are not those its open pages show: they render afresh
            self.hub.publish("profile", decoded.farm_id, {"farm": decoded.farm_id})

    def _forget(self, farm_id: str) -> None:
        with self._lock:
            known = self.farms.pop(farm_id, None) is not None
        if known:
            self.hub.publish(FARM_REMOVED, farm_id, {"farm": farm_id})

    def views(self) -> list[FarmView]:
        with self._lock:
            return list(self.farms.values())

    def view(self, farm_id: str) -> FarmView | None:
        with self._lock:
            return self.farms.get(farm_id)
