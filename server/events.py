"""Events, Sans-I/O: calibrated scores and times in, ``start`` and ``end`` events out. No clock, no I/O.

A raw cosine means different things for different labels and scenes, and a softmax score changes when
labels are added. So each label of each stream is calibrated against the stream's own baseline for that
label: ``z = (cosine - mean) / std``, where mean and variance are exponential moving averages learnt only
while the label is not present. A ``z`` of 4 means "four of this label's usual spreads above what this
stream usually shows for it", whatever the model, the label or the other labels (docs/events.md has the
measurement behind the choice). The calibrated score is smoothed, then a hysteresis state machine with a
minimum duration and a hold time turns it into events.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

EventState = str  # "start" | "end"


@dataclass(frozen=True)
class EventThresholds:
    """Event settings; a field left None is taken from the level above (label -> file -> server flags)."""

    start: float | None = None
    end: float | None = None
    min_seconds: float | None = None
    hold_seconds: float | None = None
    enabled: bool | None = None

    def over(self, base: EventThresholds) -> EventThresholds:
        """These settings, with what they leave open taken from ``base``."""
        return EventThresholds(
            *(mine if mine is not None else theirs for mine, theirs in zip(self._values(), base._values(), strict=True))
        )

    def _values(self) -> tuple[Any, ...]:
        return (self.start, self.end, self.min_seconds, self.hold_seconds, self.enabled)

    def check(self) -> None:
        """Raise ValueError for settings that cannot work together."""
        for name in ("min_seconds", "hold_seconds"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name.split('_')[0]} must be a number of seconds >= 0, got {value}")
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value}")
        if self.start is not None and self.end is not None and self.end > self.start:
            raise ValueError(f"end ({self.end:g}) must not be above start ({self.start:g})")


@dataclass(frozen=True)
class Resolved:
    """Complete settings for one label or group."""

    start: float
    end: float
    min_seconds: float
    hold_seconds: float
    enabled: bool = True


def resolve(thresholds: EventThresholds | None, defaults: Resolved) -> Resolved:
    if thresholds is None:
        return defaults
    merged = thresholds.over(EventThresholds(**defaults.__dict__))
    out = Resolved(*merged._values())
    if out.end > out.start:  # a label that raised only its start keeps a sane band
        out = replace(out, end=out.start)
    return out


@dataclass(frozen=True)
class Calibration:
    smooth_seconds: float = 0.5  # time constant of the smoothing of z
    baseline_seconds: float = 120.0  # time constant of the baseline's mean and variance
    warmup: int = 8  # inputs a label's baseline needs before it may start an event
    min_std: float = 0.005  # a cosine spread floor: a near-constant label must not turn noise into huge z


@dataclass
class _Track:
    """One label's (or group's) state in one stream."""

    mean: float = 0.0
    var: float = 0.0
    seen: int = 0
    smoothed: float = 0.0
    active: bool = False
    since: float | None = None  # when the score crossed the threshold that may change ``active``
    # A presence lasts from the score reaching the start threshold to its falling under the end threshold;
    # the minimum duration and the hold delay the events, not what they report.
    started_at: float = 0.0
    ended_at: float | None = None
    group: str | None = None  # a label's group, for the events it gives
    settings: Resolved | None = None  # as last resolved from the label set


@dataclass(frozen=True)
class Decision:
    """An event decided by one input; the caller adds the stream's fields."""

    label: str | None  # None for a group's own event
    group: str | None
    state: EventState
    score: float
    duration_s: float | None = None


def ema_weight(dt: float, tau: float) -> float:
    """The weight of a new sample after ``dt`` seconds, for an exponential average with time constant ``tau``."""
    if tau <= 0:
        return 1.0
    return 1.0 - math.exp(-max(dt, 0.0) / tau)


def _step(track: _Track, score: float, now: float, settings: Resolved) -> str | None:
    """Advance the hysteresis state machine by one smoothed score; 'start', 'end' or None."""
    if not track.active:
        if score >= settings.start and settings.enabled:
            track.since = now if track.since is None else track.since
            if now - track.since >= settings.min_seconds:
                track.active, track.started_at, track.since = True, track.since, None
                return "start"
        else:
            track.since = None
        return None
    if score < settings.end or not settings.enabled:
        track.since = now if track.since is None else track.since
        if now - track.since >= settings.hold_seconds or not settings.enabled:
            track.active, track.ended_at, track.since = False, track.since, None
            return "end"
    else:
        track.since = None
    return None


@dataclass
class StreamEvents:
    """Event state of one stream: feed it each input's cosines over the label set, in order."""

    calibration: Calibration
    defaults: Resolved
    labels: dict[str, _Track] = field(default_factory=dict)
    groups: dict[str, _Track] = field(default_factory=dict)
    last: float | None = None  # stream time of the last input

    def update(
        self,
        now: float,
        names: tuple[str, ...],
        similarity: np.ndarray,
        groups: tuple[str | None, ...] | None = None,
        thresholds: tuple[EventThresholds | None, ...] | None = None,
        group_thresholds: dict[str, EventThresholds] | None = None,
    ) -> list[Decision]:
        """One input at stream time ``now`` (seconds, non-decreasing), its cosine per label in ``names``."""
        dt, now = self._advance(now)
        out = self._forget(set(names), set(g for g in (groups or ()) if g), now)
        smooth = ema_weight(dt, self.calibration.smooth_seconds) if self.labels else 1.0
        group_scores: dict[str, float] = {}
        for i, name in enumerate(names):
            track = self.labels.setdefault(name, _Track())
            z = self._calibrate(track, float(similarity[i]), dt)
            group = track.group = groups[i] if groups else None
            fresh = track.seen <= self.calibration.warmup
            track.smoothed = z if fresh else track.smoothed + smooth * (z - track.smoothed)
            settings = track.settings = resolve(thresholds[i] if thresholds else None, self.defaults)
            if fresh and not track.active:
                continue  # its baseline is still being learnt: no events, and no say in its group's
            if group:
                group_scores[group] = max(group_scores.get(group, -math.inf), track.smoothed)
            change = _step(track, track.smoothed, now, settings)
            if change is not None:
                out.append(self._decision(track, name, change, now))
        for group, score in group_scores.items():
            track = self.groups.setdefault(group, _Track(group=group))
            track.smoothed = score  # the best smoothed member: already smooth
            settings = track.settings = resolve((group_thresholds or {}).get(group), self.defaults)
            change = _step(track, score, now, settings)
            if change is not None:
                out.append(self._decision(track, None, change, now))
        return out

    def silence(self, now: float) -> list[Decision]:
        """An input with nothing in it (a silent audio window): every label decays toward its baseline."""
        dt, now = self._advance(now)
        out: list[Decision] = []
        smooth = ema_weight(dt, self.calibration.smooth_seconds)
        for tracks, is_group in ((self.labels, False), (self.groups, True)):
            for name, track in tracks.items():
                track.smoothed -= smooth * track.smoothed
                change = _step(track, track.smoothed, now, track.settings or self.defaults)
                if change is not None:
                    out.append(self._decision(track, None if is_group else name, change, now))
        return out

    def _advance(self, now: float) -> tuple[float, float]:
        """Seconds since the last input, and the stream's time now: a clock that goes back is held where it was."""
        dt = 0.0 if self.last is None else max(0.0, now - self.last)
        self.last = now if self.last is None else max(self.last, now)
        return dt, self.last

    def close(self, now: float | None = None) -> list[Decision]:
        """The stream ended: every open event ends now."""
        when = self.last if now is None else max(now, self.last or now)
        out = [self._decision(t, n, "end", when or 0.0) for n, t in self.labels.items() if t.active]
        out += [self._decision(t, None, "end", when or 0.0) for t in self.groups.values() if t.active]
        self.labels.clear()
        self.groups.clear()
        return out

    def _forget(self, names: set[str], groups: set[str], now: float) -> list[Decision]:
        """Labels and groups a reload removed: their open events end, their state goes."""
        out: list[Decision] = []
        for name in [n for n in self.labels if n not in names]:
            track = self.labels.pop(name)
            if track.active:
                out.append(self._decision(track, name, "end", now))
        for group in [g for g in self.groups if g not in groups]:
            track = self.groups.pop(group)
            if track.active:
                out.append(self._decision(track, None, "end", now))
        return out

    def _calibrate(self, track: _Track, cosine: float, dt: float) -> float:
        """z of ``cosine`` against the label's baseline; the baseline learns only while the label is absent."""
        cal = self.calibration
        std = max(math.sqrt(track.var), cal.min_std)
        z = (cosine - track.mean) / std if track.seen else 0.0
        if not track.active and track.since is None:
            # Early on, a plain running average (so the first inputs count fully), then an exponential one.
            weight = 1.0 / (track.seen + 1) if track.seen < cal.warmup else ema_weight(dt, cal.baseline_seconds)
            delta = cosine - track.mean
            track.mean += weight * delta
            track.var = (1 - weight) * (track.var + weight * delta * delta)
            track.seen += 1
        return z

    @staticmethod
    def _decision(track: _Track, label: str | None, state: str, now: float) -> Decision:
        """``now`` ends a presence that is cut short (a reload, the stream's end, silence) rather than faded."""
        if state == "end":
            ended = track.ended_at if track.ended_at is not None and not track.active else now
            track.active, track.since, track.ended_at = False, None, None
            duration = max(0.0, ended - track.started_at)
        else:
            duration = None
        return Decision(label, track.group, state, round(track.smoothed, 3), duration)
