"""Who sees what beyond a stream's own connection: watchers, and the event outputs (MQTT, webhooks, the log).

Everything here runs on the event loop and only hands messages over: a watcher's send puts into its own
bounded outbox, and an output's ``publish`` puts into its own bounded queue, so a slow page, broker or
receiver never holds back inference or another client.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .labelsets import LabelSet
from .metrics import Metrics
from .outputs import EventOutput
from .worker import StreamKey

log = logging.getLogger("sensorium.watch")

THUMBNAIL_INTERVAL_S = 1.0


class Watcher(Protocol):
    id: int

    def send(self, message: dict[str, Any]) -> None: ...


@dataclass
class LiveStream:
    key: StreamKey
    since: float  # wall clock of its first input
    labels_version: int
    last_thumbnail: float = -THUMBNAIL_INTERVAL_S  # monotonic

    def describe(self) -> dict[str, Any]:
        client, modality, name = self.key
        return {
            "client": client, "modality": modality, "stream": name,
            "labels_version": self.labels_version, "since": self.since,
        }  # fmt: skip


class Watch:
    """The server's live streams, the connections watching them, and the outputs events go to."""

    def __init__(self, metrics: Metrics, outputs: Sequence[EventOutput] = ()) -> None:
        self.metrics = metrics
        self.outputs = list(outputs)
        self.streams: dict[StreamKey, LiveStream] = {}
        self._watchers: dict[Watcher, frozenset[str] | None] = {}  # None: every stream
        metrics.watchers.set_function(lambda: float(len(self._watchers)))

    # --- watchers -----------------------------------------------------------------

    def subscribe(self, watcher: Watcher, names: frozenset[str] | None) -> None:
        self._watchers[watcher] = names
        watcher.send(self.snapshot())

    def unsubscribe(self, watcher: Watcher) -> None:
        self._watchers.pop(watcher, None)

    def snapshot(self) -> dict[str, Any]:
        return {"type": "streams", "streams": [live.describe() for live in self.streams.values()]}

    def _copy_to_watchers(self, key: StreamKey, message: dict[str, Any]) -> None:
        copy: dict[str, Any] | None = None
        for watcher, names in self._watchers.items():
            if watcher.id == key.session or (names is not None and key.name not in names):
                continue  # a connection has its own streams' messages already
            copy = copy or {**message, "client": key.session, "watched": True}
            watcher.send(copy)

    # --- streams ------------------------------------------------------------------

    def stream_started(self, key: StreamKey, label_set: LabelSet | None) -> None:
        self.streams[key] = LiveStream(key, time.time(), label_set.version if label_set is not None else 0)
        self._announce(key, label_set)
        self._tell_watchers()

    def stream_ended(self, key: StreamKey) -> None:
        if self.streams.pop(key, None) is not None:
            self._tell_watchers()

    def relabelled(self, label_set: LabelSet) -> None:
        """A label file reloaded: outputs learn the new labels of every live stream of that modality."""
        for live in self.streams.values():
            if live.key.modality == label_set.modality:
                live.labels_version = label_set.version
                self._announce(live.key, label_set)
        self._tell_watchers()

    def _announce(self, key: StreamKey, label_set: LabelSet | None) -> None:
        labels = list(label_set.names) if label_set is not None else []
        groups = sorted({g for g in label_set.groups if g}) if label_set is not None else []
        for output in self.outputs:
            output.announce(key.modality, key.name, key.session, labels, groups)

    def _tell_watchers(self) -> None:
        if self._watchers:
            snapshot = self.snapshot()
            for watcher in self._watchers:
                watcher.send(snapshot)

    # --- what streams produce -----------------------------------------------------------

    def result(self, key: StreamKey, message: dict[str, Any]) -> None:
        if self._watchers:
            self._copy_to_watchers(key, message)

    def event(self, key: StreamKey, message: dict[str, Any]) -> None:
        self.metrics.events.labels(key.modality, message["state"]).inc()
        self._copy_to_watchers(key, message)
        for output in self.outputs:
            output.publish(message)

    def thumbnail_due(self, key: StreamKey) -> bool:
        """Whether a watcher would get a thumbnail of this stream now (at most one a second)."""
        live = self.streams.get(key)
        if live is None or not self._watchers:
            return False
        return time.monotonic() - live.last_thumbnail >= THUMBNAIL_INTERVAL_S

    def thumbnail(self, key: StreamKey, message: dict[str, Any]) -> None:
        live = self.streams.get(key)
        if live is not None:
            live.last_thumbnail = time.monotonic()
            self._copy_to_watchers(key, message)
