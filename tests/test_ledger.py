from clients.ledger import Ledger, percentile


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
