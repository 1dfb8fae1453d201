"""Events to an MQTT broker, with Home Assistant discovery: one binary_sensor per label and per group.

Topic layout (docs/outputs.md): ``{prefix}/status`` online/offline (retained, offline is also the last
will), ``{prefix}/{modality}/{stream}/{entity}/state`` ON/OFF (retained), ``.../event`` each event's
JSON (not retained), ``{discovery}/binary_sensor/{node}_{modality}_{stream}_{entity}/config`` (retained).

Threads: paho's network loop, and one worker of ours that hands messages to paho while connected, so
``publish`` only appends to a bounded queue. States are not replayed from the queue: they are kept per
entity (the latest wins) and republished on every connect, so a broker restarted without persistence,
or a Home Assistant that restarts (its birth message), gets every config and state back.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from . import __version__
from .metrics import Metrics

log = logging.getLogger("sensorium.mqtt")

ON, OFF = b"ON", b"OFF"
ONLINE, OFFLINE = b"online", b"offline"
URL_FORM = "mqtt://[user:password@]host[:port]"
DROP_REASONS = ("overflow", "disconnected", "shutdown", "invalid")


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int = 1883
    username: str | None = None
    password: str | None = None

    def __str__(self) -> str:  # for logs: never the password
        return f"mqtt://{self.username + '@' if self.username else ''}{self.host}:{self.port}"


def parse_mqtt_url(url: str) -> BrokerAddress:
    """``mqtt://[user:password@]host[:port]``; anything else raises ValueError (which never echoes a password)."""
    parts = urlsplit(url.strip())
    if parts.scheme != "mqtt":
        raise ValueError(f"--mqtt must be {URL_FORM}; the scheme is {parts.scheme or 'missing'!r}")
    try:
        port = parts.port or 1883
    except ValueError:
        raise ValueError(f"--mqtt must be {URL_FORM}; the port is not a number from 1 to 65535") from None
    if not parts.hostname:
        raise ValueError(f"--mqtt must be {URL_FORM}; the host is missing")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"--mqtt must be {URL_FORM}; a path, query or fragment means nothing here")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    return BrokerAddress(parts.hostname, port, username, password)


def check_topic_prefix(prefix: str, flag: str) -> str:
    prefix = prefix.strip("/")
    if not prefix or any(c in prefix for c in "+#\0"):
        raise ValueError(f"{flag} must be a non-empty MQTT topic without + or #, got {prefix!r}")
    return prefix


def slug(text: str) -> str:
    """Lowercase ``[a-z0-9_]``: safe in topics and entity ids. Text with nothing of that gets a stable hash."""
    out = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return out or "x" + hashlib.sha1(text.encode()).hexdigest()[:8]


@dataclass
class _Entity:
    """One binary_sensor: a label, or a group ("any <group>"), of one stream."""

    modality: str
    stream: str
    name: str  # the label or the group
    is_group: bool
    object_id: str  # "{node}_{modality}_{stream}_{entity}"
    base: str  # "{prefix}/{modality}/{stream}/{entity}"
    config_topic: str
    state: bytes = OFF

    @property
    def state_topic(self) -> str:
        return f"{self.base}/state"

    @property
    def event_topic(self) -> str:
        return f"{self.base}/event"


EntityKey = tuple[str, str, bool, str]  # modality, stream, is_group, name


class MqttOutput:
    name = "mqtt"

    def __init__(
        self,
        broker: BrokerAddress,
        metrics: Metrics,
        *,
        prefix: str = "sensorium",
        discovery_prefix: str = "homeassistant",
        queue_size: int = 1000,
        inflight: int = 64,
        reconnect_min_delay: int = 1,
        reconnect_max_delay: int = 30,
        keepalive: int = 30,
    ) -> None:
        self.broker = broker
        self.prefix = check_topic_prefix(prefix, "--mqtt-prefix")
        self.discovery_prefix = check_topic_prefix(discovery_prefix, "--mqtt-discovery-prefix")
        self.status_topic = f"{self.prefix}/status"
        self.node = slug(self.prefix)  # the device id: two servers on one broker differ by their prefix
        self._metrics = metrics
        self._queue_size = max(1, queue_size)
        self._inflight = max(1, inflight)
        self._keepalive = keepalive
        # One lock for our state; paho is never called while it is held, because paho calls on_publish
        # while holding its own lock, and the two orders would deadlock.
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._events: deque[tuple[str, bytes]] = deque()  # (event topic, JSON) waiting for the broker
        self._retained: dict[str, bytes] = {}  # retained messages to (re)send; the latest per topic wins
        self._entities: dict[EntityKey, _Entity] = {}
        self._pending: set[int] = set()  # message ids of events the broker has not acknowledged yet
        self._early_acks: set[int] = set()  # acknowledgements that came before publish() returned their id
        self._connected = False
        self._started = False
        self._closing = False
        self._stopping = False
        self._warned_unreachable = False
        self._worker = threading.Thread(target=self._run, name="sensorium-mqtt", daemon=True)
        client_id = f"sensorium-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        if broker.username:
            self._client.username_pw_set(broker.username, broker.password)
        self._client.will_set(self.status_topic, OFFLINE, qos=1, retain=True)
        self._client.reconnect_delay_set(reconnect_min_delay, reconnect_max_delay)
        self._client.max_inflight_messages_set(self._inflight)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message
        metrics.output_up.labels(self.name).set(0)
        metrics.output_sent.labels(self.name)  # present on /metrics at 0 before the first event
        for reason in DROP_REASONS:
            metrics.output_dropped.labels(self.name, reason)

    # The interface (server/outputs.py).

    def start(self) -> None:
        log.info("MQTT: connecting to %s (topics under %s/)", self.broker, self.prefix)
        self._started = True
        # connect_async only records the address; paho's thread connects and reconnects with backoff.
        self._client.connect_async(self.broker.host, self.broker.port, self._keepalive)
        self._client.loop_start()
        self._worker.start()

    def announce(self, modality: str, stream: str, client: int, labels: list[str], groups: list[str]) -> None:
        wanted = [(False, label) for label in labels] + [(True, group) for group in groups]
        with self._lock:
            keep = {(modality, stream, is_group, name) for is_group, name in wanted}
            for key in [k for k in self._entities if k[:2] == (modality, stream) and k not in keep]:
                gone = self._entities.pop(key)  # an empty retained config removes it from Home Assistant
                self._retained[gone.config_topic] = b""
                self._retained[gone.state_topic] = b""
            for is_group, name in wanted:
                entity = self._entity(modality, stream, is_group, name)
                self._retained[entity.config_topic] = self._config(entity)
                self._retained[entity.state_topic] = entity.state  # OFF unless an event of it is under way
            self._changed.notify_all()

    def publish(self, event: dict[str, Any]) -> None:
        try:
            modality, stream, state = str(event["modality"]), str(event["stream"]), event["state"]
            label, group = event.get("label"), event.get("group")
            if label is None and group is None:
                raise ValueError("an event names a label or a group")
            name = str(label if label is not None else group)
            payload = json.dumps(event, separators=(",", ":"), allow_nan=False).encode()
        except (KeyError, TypeError, ValueError) as error:
            log.warning("MQTT: an event that cannot be published (%r) was dropped: %s", error, event)
            self._metrics.output_dropped.labels(self.name, "invalid").inc()
            return
        overflow = 0
        with self._lock:
            if self._closing:
                reason = "shutdown"
            else:
                reason = ""
                entity = self._entity(modality, stream, label is None, name)
                entity.state = ON if state == "start" else OFF
                self._retained[entity.state_topic] = entity.state
                if len(self._events) >= self._queue_size:
                    self._events.popleft()
                    overflow = 1
                self._events.append((entity.event_topic, payload))
                self._changed.notify_all()
        if reason:
            self._metrics.output_dropped.labels(self.name, reason).inc()
        if overflow:
            self._metrics.output_dropped.labels(self.name, "overflow").inc()

    def close(self, timeout: float = 2.0) -> None:
        deadline = time.monotonic() + max(0.0, timeout)
        flush_until = deadline - min(0.5, timeout / 4)  # leave time for "offline"
        with self._lock:
            if self._closing:
                return
            self._closing = True
            while self._connected and (self._events or self._pending or self._retained):
                left = flush_until - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            connected = self._connected
        if connected:
            info = self._client.publish(self.status_topic, OFFLINE, qos=1, retain=True)
            # RuntimeError: the connection went at that moment, and the last will says offline instead.
            with contextlib.suppress(RuntimeError):
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._stopping = True
            self._changed.notify_all()
        if self._started:  # the worker may be handing a batch to paho: it records it in _pending first
            self._worker.join(max(0.05, deadline - time.monotonic()))
        with self._lock:
            left_behind = len(self._events) + len(self._pending)
            self._events.clear()
            self._pending.clear()  # an acknowledgement that still comes is not counted twice
        if left_behind:
            reason = "shutdown" if connected else "disconnected"
            self._metrics.output_dropped.labels(self.name, reason).inc(left_behind)
            log.warning("MQTT: %d events not delivered at shutdown (%s)", left_behind, reason)
        if self._started:
            self._client.disconnect()
            # loop_stop joins paho's thread, which may sit in a connect attempt: never wait past the deadline.
            stopper = threading.Thread(target=self._client.loop_stop, name="sensorium-mqtt-stop", daemon=True)
            stopper.start()
            stopper.join(max(0.05, deadline - time.monotonic()))
        self._metrics.output_up.labels(self.name).set(0)

    # Entities and their messages (call with the lock held).

    def _entity(self, modality: str, stream: str, is_group: bool, name: str) -> _Entity:
        key = (modality, stream, is_group, name)
        entity = self._entities.get(key)
        if entity is None:
            stream_slug = slug(stream)
            own = slug(f"any {name}" if is_group else name)
            taken = {e.object_id for e in self._entities.values()}
            object_id = f"{self.node}_{slug(modality)}_{stream_slug}_{own}"
            if object_id in taken:  # "Dog" and "dog", or a label "any animal" beside the group "animal"
                own += "_" + hashlib.sha1(f"{is_group}:{name}".encode()).hexdigest()[:6]
                object_id = f"{self.node}_{slug(modality)}_{stream_slug}_{own}"
            entity = _Entity(
                modality, stream, name, is_group, object_id,
                base=f"{self.prefix}/{slug(modality)}/{stream_slug}/{own}",
                config_topic=f"{self.discovery_prefix}/binary_sensor/{object_id}/config",
            )  # fmt: skip
            self._entities[key] = entity
            self._retained[entity.config_topic] = self._config(entity)
        return entity

    def _config(self, entity: _Entity) -> bytes:
        config = {
            "name": f"{entity.stream} {'any ' if entity.is_group else ''}{entity.name}",
            "unique_id": entity.object_id,
            "state_topic": entity.state_topic,
            "payload_on": ON.decode(),
            "payload_off": OFF.decode(),
            "availability_topic": self.status_topic,
            "payload_available": ONLINE.decode(),
            "payload_not_available": OFFLINE.decode(),
            "json_attributes_topic": entity.event_topic,
            "device": {
                "identifiers": [self.node],
                "name": "Sensorium" if self.node == "sensorium" else f"Sensorium ({self.prefix})",
                "manufacturer": "Sensorium",
                "sw_version": __version__,
            },
        }
        return json.dumps(config, separators=(",", ":")).encode()

    def _everything_again(self) -> None:
        """Every config and state back into the outbox: after a (re)connect, or Home Assistant's restart."""
        for entity in self._entities.values():
            self._retained[entity.config_topic] = self._config(entity)
            self._retained[entity.state_topic] = entity.state

    # The worker: hands messages to paho while connected, at most ``inflight`` events unacknowledged.

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._stopping and not (
                    self._connected and (self._retained or (self._events and len(self._pending) < self._inflight))
                ):
                    self._changed.wait()
                if self._stopping:
                    return
                retained = list(self._retained.items())
                self._retained.clear()
                room = max(0, self._inflight - len(self._pending))
                batch = [self._events.popleft() for _ in range(min(room, len(self._events)))]
            # QoS 1: paho keeps what it has not had acknowledged and sends it again after a reconnect.
            for topic, payload in retained:
                self._client.publish(topic, payload, qos=1, retain=True)
            mids = [self._client.publish(topic, payload, qos=1).mid for topic, payload in batch]
            delivered = 0
            with self._lock:
                for mid in mids:
                    if mid in self._early_acks:
                        delivered += 1
                    else:
                        self._pending.add(mid)
                # Whatever else is in there acknowledged a retained message: no one waits for those.
                self._early_acks.clear()
                self._changed.notify_all()
            if delivered:
                self._metrics.output_sent.labels(self.name).inc(delivered)

    # paho's callbacks (its network thread).

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            with self._lock:
                first, self._warned_unreachable = not self._warned_unreachable, True
            level = logging.WARNING if first else logging.DEBUG
            log.log(level, "MQTT: the broker at %s refused the connection: %s; retrying", self.broker, reason)
            return
        log.info("MQTT: connected to %s", self.broker)
        with self._lock:
            self._connected = True
            self._warned_unreachable = False
            waiting = self._retained
            self._retained = {self.status_topic: ONLINE}  # first, so entities are available when they appear
            self._retained.update(waiting)
            self._everything_again()
            self._changed.notify_all()
        self._metrics.output_up.labels(self.name).set(1)
        # Home Assistant says "online" here when it starts; it then needs the discovery configs again.
        client.subscribe(f"{self.discovery_prefix}/status", qos=1)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        with self._lock:
            first, self._warned_unreachable = not self._warned_unreachable, True
            queued = len(self._events)
        if first:
            log.warning(
                "MQTT: cannot reach the broker at %s; retrying in the background (up to %d events wait)",
                self.broker, self._queue_size,
            )  # fmt: skip
        else:
            log.debug("MQTT: still cannot reach %s (%d events waiting)", self.broker, queued)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        with self._lock:
            was_connected, self._connected = self._connected, False
            stopping = self._stopping
        self._metrics.output_up.labels(self.name).set(0)
        if was_connected and not stopping:
            log.warning("MQTT: lost the broker at %s (%s); reconnecting with backoff", self.broker, reason)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        with self._lock:
            if mid in self._pending:
                self._pending.discard(mid)
                delivered = True
            else:
                self._early_acks.add(mid)
                delivered = False
            self._changed.notify_all()
        if delivered:
            self._metrics.output_sent.labels(self.name).inc()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic == f"{self.discovery_prefix}/status" and message.payload == ONLINE:
            with self._lock:
                self._everything_again()
                self._changed.notify_all()
