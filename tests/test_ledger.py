import time
from typing import Any

from clients.ledger import Ledger, percentile
from clients.messages import Event, Result


def result(seq: int, dropped: int = 0, modality: str = "image", stream: str = "camera") -> dict:
    timings = dict(decode_ms=1.0, queue_ms=0.5, preprocess_ms=2.0, encode_ms=10.0, similarity_ms=0.1, total_ms=14.0)
    top = [{"label": "dog", "score": 0.9, "similarity": 0.3}]
    return dict(type="result", modality=modality, stream=stream, seq=seq, ts=0.0, labels_version=1, top=top,
                timings=timings, dropped=dropped)  # fmt: skip


def test_drops_reported_by_an_older_frames_result_free_the_skipped_frames():
    ledger = Ledger()
    for seq in range(3):  # 0 is being encoded, 1 waits, 2 replaces 1
        ledger.on_sent("image", "camera", seq, now=float(seq))
    first = ledger.on_result(result(0, dropped=1), now=10.0)
    assert first.round_trip_ms == 10_000.0
    assert ledger.in_flight("image", "camera") == 1  # only frame 2 is still owed
    ledger.on_result(result(2), now=11.0)
    assert ledger.in_flight("image", "camera") == 0
    assert ledger.sent == ledger.results + ledger.dropped == 3


def test_errors_and_disconnects_close_the_books():
    ledger = Ledger()
    for seq in range(4):
        ledger.on_sent("image", "camera", seq, now=0.0)
    ledger.on_error({"type": "error", "code": "bad_image", "message": "x", "seq": 1})
    ledger.on_error({"type": "error", "code": "bad_msgpack", "message": "x"})  # no seq: counted, frees nothing
    assert ledger.in_flight("image", "camera") == 3
    assert ledger.on_disconnect() == 3
    assert (ledger.sent, ledger.errors, ledger.lost) == (4, 2, 3)


def test_audio_chunks_are_not_in_flight_but_get_round_trips():
    ledger = Ledger()
    for seq in range(10):
        ledger.on_sent("audio", "mic", seq, now=seq * 0.1, tracked=False)
    assert ledger.in_flight("audio", "mic") == 0
    got = ledger.on_result(result(9, modality="audio", stream="mic"), now=1.0)
    assert got.round_trip_ms is not None and abs(got.round_trip_ms - 100.0) < 1e-6


def test_summary_and_percentiles():
    ledger = Ledger()
    ledger.on_sent("image", "camera", 0, now=0.0)
    ledger.on_result(result(0), now=0.02)
    text = ledger.summary("frames")
    assert text.startswith("frames sent 1, results 1, dropped 0, errors 0, lost in reconnects 0")
    assert "round trip p50 20.0 ms" in text and "encode 10.0" in text
    assert percentile([1, 2, 3, 4], 50) == 2.5 and percentile([5], 95) == 5


def test_an_error_frees_only_the_slot_of_its_own_stream():
    ledger = Ledger()
    for seq in range(4):
        ledger.on_sent("image", "camera", seq, now=0.0)
    for seq in range(2):
        ledger.on_sent("image", "door", seq, now=0.0)
    for seq in range(4):
        ledger.on_sent("audio", "mic", seq, now=0.0, tracked=False)
    # Every stream counts seq from 0: an audio error for chunk 3 is not about camera frame 3.
    ledger.on_error({"type": "error", "code": "bad_audio", "message": "x", "seq": 3, "modality": "audio",
                     "stream": "mic"})  # fmt: skip
    assert ledger.in_flight("image", "camera") == 4
    ledger.on_error({"type": "error", "code": "bad_image", "message": "x", "seq": 1, "modality": "image",
                     "stream": "door"})  # fmt: skip
    assert (ledger.in_flight("image", "camera"), ledger.in_flight("image", "door")) == (4, 1)
    # An older server says only the seq: it frees a slot only when exactly one stream holds that seq.
    ledger.on_error({"type": "error", "code": "bad_image", "message": "x", "seq": 0})  # camera 0 and door 0
    assert (ledger.in_flight("image", "camera"), ledger.in_flight("image", "door")) == (4, 1)
    ledger.on_error({"type": "error", "code": "bad_image", "message": "x", "seq": 2})  # only camera 2
    assert (ledger.in_flight("image", "camera"), ledger.in_flight("image", "door")) == (3, 1)
    assert ledger.errors == 4


def test_ended_leaves_nothing_of_the_stream_in_flight():
    ledger = Ledger()
    for seq in range(3):
        ledger.on_sent("image", "camera", seq, now=0.0)
    ledger.on_sent("image", "door", 0, now=0.0)
    ledger.on_result(result(0), now=0.1)
    assert not ledger.has_ended("image", "camera")
    ledger.on_ended({"type": "ended", "modality": "image", "stream": "camera"})
    assert ledger.has_ended("image", "camera") and not ledger.has_ended("image", "door")
    assert (ledger.in_flight("image", "camera"), ledger.in_flight("image", "door")) == (0, 1)
    assert ledger.dropped == 2  # frames 1 and 2 got no result and never will
    assert ledger.sent == ledger.results + ledger.dropped + ledger.in_flight("image", "door")
    ledger.on_sent("image", "camera", 3, now=1.0)  # the stream goes on after all
    assert not ledger.has_ended("image", "camera") and ledger.in_flight("image", "camera") == 1


# --- events and silence: messages in, objects, books and lines out ----------------------------------


def event(state: str, label: str | None = "dog barking", group: str | None = None, **extra: Any) -> dict:
    message = dict(type="event", modality="audio", stream="mic", client=3, label=label, group=group, state=state,
                   score=4.31, seq=17, ts=1732450000.12, time=1732450000.35)  # fmt: skip
    if state == "end":
        message["duration_s"] = 6.0
    return {**message, **extra}


def test_an_event_message_becomes_an_event():
    got = Event.from_message(event("end", group="animals"))
    assert got == Event(modality="audio", stream="mic", client=3, label="dog barking", group="animals",
                        state="end", score=4.31, seq=17, ts=1732450000.12, time=1732450000.35, duration_s=6.0,
                        watched=False)  # fmt: skip
    assert Event.from_message(event("start")).duration_s is None
    watched = Event.from_message(event("start", watched=True, client=9))
    assert watched.watched and watched.client == 9


def test_event_lines_say_when_what_and_how_strong_or_how_long():
    clock = time.strftime("%H:%M:%S", time.localtime(1732450000.35))
    assert Event.from_message(event("start")).line() == f"{clock}  audio mic  dog barking  start  z=4.3"
    assert Event.from_message(event("end")).line() == f"{clock}  audio mic  dog barking  end after 6.0 s"
    group = Event.from_message(event("start", label=None, group="animals"))
    assert group.name == "any animals" and "  any animals  start" in group.line()
    watched = Event.from_message(event("start", watched=True, client=9, modality="image", stream="camera"))
    assert watched.line() == f"{clock}  image camera client 9  dog barking  start  z=4.3"


def test_results_carry_groups_and_silence():
    message = result(4, modality="audio", stream="mic")
    message["top"] = [{"label": "dog barking", "score": 0.8, "similarity": 0.31, "group": "animals"},
                      {"label": "speech", "score": 0.1, "similarity": 0.2, "group": None}]  # fmt: skip
    got = Result.from_message(message, 12.0)
    assert [(t.label, t.group) for t in got.top] == [("dog barking", "animals"), ("speech", None)]
    assert not got.silent and got.line() == "[audio mic #4] dog barking 0.80  speech 0.10  (12 ms)"
    quiet = Result.from_message({**message, "top": [], "silent": True}, 3.0)
    assert quiet.silent and quiet.top == () and quiet.line() == "[audio mic #4] (silent)  (3 ms)"
    old = Result.from_message(result(0), None)  # a server from before groups and silence
    assert not old.silent and old.top[0].group is None and not old.watched
    watched = Result.from_message({**result(5), "client": 2, "watched": True}, None)
    assert watched.watched and watched.line().startswith("[image camera #5 client 2] dog 0.90")


def test_silent_results_answer_their_inputs_but_stay_out_of_the_stage_medians():
    ledger = Ledger()
    for seq in range(10):
        ledger.on_sent("audio", "mic", seq, now=seq * 0.1, tracked=False)
    ledger.on_result(result(4, modality="audio", stream="mic"), now=1.0)
    quiet = {**result(9, modality="audio", stream="mic"), "top": [], "silent": True, "timings": {"total_ms": 0.2}}
    assert ledger.on_result(quiet, now=1.5).silent
    assert (ledger.results, ledger.silent) == (2, 1)
    assert ledger.stages["total_ms"] == [14.0]  # the silent one ran no model
    assert len(ledger.round_trips) == 2  # but it made the round trip
    text = ledger.summary("chunks")
    assert text.startswith("chunks sent 10, results 2, dropped 0") and "silent results 1" in text


def test_the_ledger_counts_events_by_label():
    ledger = Ledger()
    assert "events" not in ledger.summary()
    for message in (event("start"), event("start", label="siren"), event("end"), event("start"),
                    event("start", label=None, group="animals"), event("end", label="siren")):  # fmt: skip
        got = ledger.on_event(message)
        assert isinstance(got, Event)
    assert (ledger.event_starts, ledger.event_ends) == (4, 2)
    assert ledger.events_by_label == {"dog barking": 2, "siren": 1, "any animals": 1}
    assert "events started 4, ended 2: dog barking 2, siren 1, any animals 1" in ledger.summary()
    assert ledger.sent == ledger.results == 0  # events answer no input


def test_a_long_tail_of_labels_is_counted_not_listed():
    ledger = Ledger()
    for i in range(12):
        for _ in range(12 - i):
            ledger.on_event(event("start", label=f"label{i}"))
    line = ledger.summary().splitlines()[-1]
    assert line.startswith("events started 78, ended 0: label0 12, label1 11, ")
    assert line.endswith("label7 5 and 4 more labels")
