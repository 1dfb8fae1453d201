"""The events core, Sans-I/O: cosines and stream times in, start/end decisions out."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.events import Calibration, EventThresholds, Resolved, StreamEvents, resolve

DEFAULTS = Resolved(start=4.0, end=2.0, min_seconds=1.0, hold_seconds=2.0)
EAGER = Resolved(start=1.0, end=0.5, min_seconds=0.0, hold_seconds=0.0)


def tracker(defaults: Resolved = DEFAULTS, **calibration: float) -> StreamEvents:
    return StreamEvents(Calibration(**calibration), defaults)  # type: ignore[arg-type]


def feed(events: StreamEvents, values: list[float], step: float = 0.1, start: float = 0.0, name: str = "dog"):
    out = []
    for i, value in enumerate(values):
        out += events.update(start + i * step, (name,), np.array([value], np.float32))
    return out


def noise(count: int, seed: int = 0, scale: float = 0.01, centre: float = 0.2) -> list[float]:
    return list(centre + scale * np.random.default_rng(seed).uniform(-1, 1, count))


def check_well_formed(decisions) -> None:
    """Per label: start, end, start, end... never two starts in a row, never an end first; durations >= 0."""
    open_: dict[object, bool] = {}
    for d in decisions:
        key = (d.label, d.group)
        if d.state == "start":
            assert not open_.get(key), f"two starts in a row for {key}"
            open_[key] = True
        else:
            assert open_.get(key), f"an end without a start for {key}"
            assert d.duration_s is not None and d.duration_s >= 0
            open_[key] = False


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.floats(-1, 1), st.floats(0, 2)), min_size=1, max_size=120),
    st.sampled_from([DEFAULTS, EAGER]),
)
def test_any_input_gives_well_formed_events(steps, defaults):
    events, now, out = tracker(defaults), 0.0, []
    for value, gap in steps:
        now += gap
        out += events.update(now, ("dog", "cat"), np.array([value, -value], np.float32), groups=("animals", "animals"))
    out += events.close()
    check_well_formed(out)
    assert not any(d.state == "start" for d in events.close())


@settings(max_examples=50, deadline=None)
@given(st.floats(-1, 1), st.integers(1, 200))
def test_a_constant_input_gives_no_events(value, count):
    assert feed(tracker(EAGER), [value] * count) == []


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-1, 1), min_size=1, max_size=200))
def test_noise_within_what_the_baseline_has_seen_gives_none(fractions):
    """After a warm-up on bounded noise, any order of values within the same bounds stays inside the band."""
    events = tracker()
    assert feed(events, noise(100)) == []
    values = [0.2 + 0.01 * f for f in fractions]
    assert feed(events, values, start=10.0) == []


def test_a_presence_gives_one_start_after_min_seconds_and_one_end_after_hold():
    events = tracker()
    out = feed(events, noise(100))  # 10 s of baseline
    present = [0.5] * 50  # 5 s clearly above it
    out += feed(events, present, start=10.0)
    out += feed(events, noise(60, seed=1), start=15.0)
    assert [d.state for d in out] == ["start", "end"]
    # The duration is the presence's (the smoothing's lag aside), not shortened by min_seconds nor lengthened by hold.
    assert out[1].duration_s is not None and 5.0 <= out[1].duration_s <= 5.0 + 2.0
    assert out[0].score >= DEFAULTS.start


def test_a_blip_shorter_than_min_seconds_gives_nothing():
    events = tracker()
    feed(events, noise(100))
    assert feed(events, [0.5] * 3 + noise(50, seed=2), start=10.0) == []


def test_a_dip_shorter_than_hold_does_not_end_the_event():
    events = tracker(smooth_seconds=0.0)
    feed(events, noise(100))
    out = feed(events, [0.5] * 30 + [0.2] * 10 + [0.5] * 30, start=10.0)  # a 1 s dip, hold is 2 s
    assert [d.state for d in out] == ["start"]


def test_a_long_presence_is_not_learnt_into_the_baseline():
    events = tracker(baseline_seconds=5.0)
    feed(events, noise(100))
    out = feed(events, [0.5] * 600, start=10.0)  # a minute present, the baseline's time constant is 5 s
    assert [d.state for d in out] == ["start"]


def test_a_label_removed_by_a_reload_ends_its_open_event():
    events = tracker(EAGER)
    feed(events, noise(50))
    assert [d.state for d in feed(events, [0.6] * 5, start=5.0)] == ["start"]
    out = events.update(6.0, ("cat",), np.array([0.1], np.float32))
    assert [(d.label, d.state) for d in out] == [("dog", "end")]


def test_close_ends_what_is_open():
    events = tracker(EAGER)
    feed(events, noise(50))
    feed(events, [0.6] * 5, start=5.0)
    assert [(d.label, d.state) for d in events.close()] == [("dog", "end")]


def test_a_group_has_events_of_its_own():
    events = tracker(EAGER)
    names, groups = ("dog", "cat", "car"), ("animals", "animals", None)
    rng = np.random.default_rng(3)
    for i in range(60):
        events.update(i * 0.1, names, (0.2 + 0.01 * rng.uniform(-1, 1, 3)).astype(np.float32), groups=groups)
    out = events.update(6.0, names, np.array([0.2, 0.6, 0.2], np.float32), groups=groups)
    assert {(d.label, d.group, d.state) for d in out} == {("cat", "animals", "start"), (None, "animals", "start")}


def test_silence_ends_an_open_event_after_its_hold():
    events = tracker(Resolved(start=1.0, end=0.5, min_seconds=0.0, hold_seconds=1.5))
    feed(events, noise(50))
    feed(events, [0.6] * 5, start=5.0)
    out = []
    for i in range(1, 6):
        out += events.silence(5.5 + i)
    assert [d.state for d in out] == ["end"]


def test_a_disabled_label_gives_no_events():
    events = tracker(EAGER)
    off = (EventThresholds(enabled=False),)
    out = []
    for i, value in enumerate(noise(50) + [0.9] * 20):
        out += events.update(i * 0.1, ("dog",), np.array([value], np.float32), thresholds=off)
    assert out == []


def test_thresholds_resolve_label_over_file_over_flags():
    label = EventThresholds(start=6.0).over(EventThresholds(start=5.0, hold_seconds=9.0))
    resolved = resolve(label, DEFAULTS)
    assert (resolved.start, resolved.end, resolved.min_seconds, resolved.hold_seconds) == (6.0, 2.0, 1.0, 9.0)
    assert resolve(EventThresholds(end=7.0), DEFAULTS).end == DEFAULTS.start  # never an end above the start


@pytest.mark.parametrize(
    "bad", [EventThresholds(start=1.0, end=2.0), EventThresholds(min_seconds=-1.0), EventThresholds(start=float("nan"))]
)
def test_impossible_thresholds_are_refused(bad):
    with pytest.raises(ValueError):
        bad.check()


def test_times_that_go_backwards_are_held_and_durations_stay_non_negative():
    events = tracker(EAGER)
    feed(events, noise(50))
    out = feed(events, [0.6] * 5, start=5.0) + feed(events, noise(20, seed=4), start=1.0)
    check_well_formed(out)
