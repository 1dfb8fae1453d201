"""A stream's events, as a score consumer: server/events.py's decisions turned into ``event`` messages."""

from __future__ import annotations

import time
from typing import Any

from .events import Calibration, Decision, Resolved, StreamEvents
from .scoring import Scores
from .settings import Settings
from .worker import StreamKey


def event_message(key: StreamKey, seq: int, ts: float, decision: Decision) -> dict[str, Any]:
    """The ``event`` a decision becomes (docs/protocol.md): with the seq and ts of the input that decided it."""
    message: dict[str, Any] = {
        "type": "event",
        "modality": key.modality,
        "stream": key.name,
        "client": key.session,
        "label": decision.label,
        "group": decision.group,
        "state": decision.state,
        "score": decision.score,
        "seq": seq,
        "ts": ts,
        "time": time.time(),
    }
    if decision.duration_s is not None:
        message["duration_s"] = round(decision.duration_s, 3)
    return message


class EventConsumer:
    """Feeds each scored input of one stream to its event state; ``at`` is the stream's own clock in seconds."""

    def __init__(self, key: StreamKey, settings: Settings) -> None:
        self.key = key
        self.events = StreamEvents(
            Calibration(settings.event_smooth_seconds, settings.event_baseline_seconds),
            Resolved(settings.event_start, settings.event_end, settings.event_min_seconds, settings.event_hold_seconds),
        )
        self.seq, self.ts = -1, 0.0  # of the last input, for the events a close decides

    def consume(self, seq: int, ts: float, at: float, scores: Scores) -> list[dict[str, Any]]:
        self.seq, self.ts = seq, ts
        label_set = scores.label_set
        decisions = self.events.update(
            at,
            label_set.names,
            scores.similarity,
            label_set.groups,
            label_set.thresholds,
            label_set.group_thresholds,
        )
        return [event_message(self.key, seq, ts, decision) for decision in decisions]

    def silent(self, seq: int, ts: float, at: float) -> list[dict[str, Any]]:
        self.seq, self.ts = seq, ts
        return [event_message(self.key, seq, ts, decision) for decision in self.events.silence(at)]

    def close(self) -> list[dict[str, Any]]:
        return [event_message(self.key, self.seq, self.ts, decision) for decision in self.events.close()]
