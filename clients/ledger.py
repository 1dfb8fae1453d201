"""Client-side bookkeeping, Sans-I/O: what is in flight, what came back, and the run's summary."""

from __future__ import annotations

import statistics
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any

from .messages import Event, Result  # Result is imported from here too, where it used to live

RECENT_UNTRACKED = 256
SUMMARY_LABELS = 8  # labels named in the summary's events line
STAGES = ("decode_ms", "queue_ms", "preprocess_ms", "encode_ms", "similarity_ms", "total_ms")


@dataclass
class Ledger:
    """Counts for one run. Inputs sent = results + dropped + errors + lost (+ still in flight)."""

    sent: int = 0
    results: int = 0
    dropped: int = 0
    errors: int = 0
    lost: int = 0  # in flight when the connection broke
    reconnects: int = 0
    gap_s: float = 0.0  # time spent disconnected after the first connection
    round_trips: list[float] = field(default_factory=list)
    stages: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    _in_flight: dict[tuple[str, str], OrderedDict[int, float]] = field(default_factory=dict)
    _recent: dict[tuple[str, str], OrderedDict[int, float]] = field(default_factory=dict)
    _ended: set[tuple[str, str]] = field(default_factory=set)  # streams the server has declared ``ended``
    silent: int = 0  # results for audio windows too quiet for the model (counted in ``results`` too)
    event_starts: int = 0
    event_ends: int = 0
    events_by_label: Counter[str] = field(default_factory=Counter)  # starts, by Event.name

    def on_sent(self, modality: str, stream: str, seq: int, now: float, *, tracked: bool = True) -> None:
        """Record an input; ``tracked`` inputs expect a result of their own (frames do, audio chunks don't).

        Untracked inputs are remembered briefly, so a result naming one still gets its round trip.
        """
        self.sent += 1
        self._ended.discard((modality, stream))
        if tracked:
            self._in_flight.setdefault((modality, stream), OrderedDict())[seq] = now
            return
        recent = self._recent.setdefault((modality, stream), OrderedDict())
        recent[seq] = now
        if len(recent) > RECENT_UNTRACKED:
            recent.popitem(last=False)

    def on_result(self, message: dict[str, Any], now: float) -> Result:
        """A result of this connection's own input (never a watched copy: those answer nobody's input here).

        A silent result answers its input like any other. Its timings stay out of the stage medians: those
        describe the model's work, and no model ran for it.
        """
        self.results += 1
        self.dropped += message["dropped"]
        if message.get("silent"):
            self.silent += 1
        else:
            for stage in STAGES:
                if stage in message["timings"]:
                    self.stages[stage].append(message["timings"][stage])
        key = (message["modality"], message["stream"])
        sent_at = None
        waiting = self._in_flight.get(key)
        if waiting is not None:
            sent_at = waiting.pop(message["seq"], None)
            # The server skips a frame only while an older one of the stream is being encoded and a newer
            # one has arrived, so the frames this result reports as dropped are the oldest still in flight.
            for _ in range(min(message["dropped"], len(waiting))):
                waiting.popitem(last=False)
        if sent_at is None and key in self._recent:
            sent_at = self._recent[key].get(message["seq"])
        round_trip = None
        if sent_at is not None:
            round_trip = (now - sent_at) * 1000
            self.round_trips.append(round_trip)
        return Result.from_message(message, round_trip)

    def on_event(self, message: dict[str, Any]) -> Event:
        """An event on one of this connection's own streams."""
        event = Event.from_message(message)
        if event.state == "start":
            self.event_starts += 1
            self.events_by_label[event.name] += 1
        elif event.state == "end":
            self.event_ends += 1
        return event

    def on_error(self, message: dict[str, Any]) -> None:
        """An error frees the slot of the input it answers: the one with its seq in its (modality, stream).

        Every stream counts its own seq, so a seq alone names an input only when one stream holds it (an
        error from a server that does not say the modality and stream); otherwise nothing is freed.
        """
        self.errors += 1
        seq = message.get("seq")
        if seq is None:
            return
        modality, stream = message.get("modality"), message.get("stream")
        holders = [
            waiting
            for (m, s), waiting in self._in_flight.items()
            if seq in waiting and modality in (None, m) and stream in (None, s)
        ]
        if len(holders) == 1:
            del holders[0][seq]

    def on_end_sent(self, modality: str, stream: str) -> None:
        self._ended.discard((modality, stream))

    def on_ended(self, message: dict[str, Any]) -> None:
        """The server has answered every input of the stream it holds: nothing of it is in flight any more.

        Frames still counted in flight got no result of their own and no later result reported them, so they
        count as dropped (as does an ``ended`` message's own ``dropped``, if the server sends one).
        """
        key = (message["modality"], message["stream"])
        self._ended.add(key)
        unanswered = len(self._in_flight.pop(key, ()))
        self.dropped += max(unanswered, int(message.get("dropped") or 0))

    def has_ended(self, modality: str, stream: str) -> bool:
        """Whether ``ended`` came for the stream and nothing was sent on it since."""
        return (modality, stream) in self._ended

    def on_disconnect(self) -> int:
        lost = sum(len(waiting) for waiting in self._in_flight.values())
        self.lost += lost
        self._in_flight.clear()
        return lost

    def in_flight(self, modality: str, stream: str) -> int:
        return len(self._in_flight.get((modality, stream), ()))

    def summary(self, noun: str = "inputs") -> str:
        lines = [
            f"{noun} sent {self.sent}, results {self.results}, dropped {self.dropped}, errors {self.errors}, "
            f"lost in reconnects {self.lost}",
        ]
        if self.silent:
            lines.append(f"silent results {self.silent} (too quiet to classify)")
        if self.event_starts or self.event_ends:
            lines.append(f"events started {self.event_starts}, ended {self.event_ends}{self._events_by_label()}")
        if self.reconnects:
            lines.append(f"reconnects {self.reconnects}, disconnected for {self.gap_s:.1f} s")
        if self.round_trips:
            p50, p95 = percentile(self.round_trips, 50), percentile(self.round_trips, 95)
            lines.append(f"round trip p50 {p50:.1f} ms, p95 {p95:.1f} ms")
        medians = [f"{s.removesuffix('_ms')} {statistics.median(v):.1f}" for s, v in self.stages.items() if v]
        if medians:
            lines.append("server stage medians (ms): " + ", ".join(medians))
        return "\n".join(lines)

    def _events_by_label(self) -> str:
        """The labels that started most often; a long tail is counted, not listed, to keep the line readable."""
        ranked = self.events_by_label.most_common()
        shown = ", ".join(f"{name} {count}" for name, count in ranked[:SUMMARY_LABELS])
        rest = len(ranked) - SUMMARY_LABELS
        return (f": {shown}" if shown else "") + (f" and {rest} more labels" if rest > 0 else "")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
