"""The real server under uvicorn, spoken to with the real websockets client."""

import asyncio
import io
import time
from dataclasses import replace

import httpx
import numpy as np
import pytest
import websockets
from PIL import Image

from .helpers import audio, connect, frame, jpeg, live_server, pack, receive, receive_until, tone

TIMING_KEYS = {"decode_ms", "queue_ms", "preprocess_ms", "encode_ms", "similarity_ms", "total_ms"}


def check_result(result, modality, stream, seq, labels_version=1):
    assert result["type"] == "result"
    assert (result["modality"], result["stream"], result["seq"]) == (modality, stream, seq)
    assert result["labels_version"] == labels_version
    assert set(result["timings"]) == TIMING_KEYS
    assert all(v >= 0 for v in result["timings"].values())
    assert result["timings"]["total_ms"] >= result["timings"]["encode_ms"]
    top = result["top"]
    assert 1 <= len(top) <= 5
    scores = [t["score"] for t in top]
    assert scores == sorted(scores, reverse=True)
    assert all(0 <= t["score"] <= 1 and -1.0001 <= t["similarity"] <= 1.0001 for t in top)
    assert isinstance(result["dropped"], int)


def test_health_and_welcome(server):
    health = httpx.get(f"{server.http}/health").json()
    assert health["status"] == "ok"
    assert health["labels"]["image"]["count"] > 100 and health["labels"]["audio"]["version"] == 1
    assert health["device"] == "cpu"

    async def scenario():
        async with websockets.connect(server.ws) as ws:
            welcome = await receive(ws)
            assert welcome["protocol"] == 1 and welcome["server"].startswith("sensorium/")
            assert set(welcome["modalities"]) == {"image", "audio"}
            assert welcome["modalities"]["image"]["label_count"] == health["labels"]["image"]["count"]
            assert welcome["limits"]["max_image_pixels"] == server.settings.max_image_pixels
            assert httpx.get(f"{server.http}/health").json()["clients"] == 1

    asyncio.run(scenario())


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp", "raw"])
def test_image_result(server, fmt):
    if fmt == "raw":
        extra = {
            "data": np.full((48, 64, 3), 90, np.uint8).tobytes(),
            "width": 64,
            "height": 48,
            "pixel_format": "rgb24",
        }
    else:
        extra = {"data": jpeg(size=(64, 48), fmt=fmt.upper())}

    async def scenario():
        ws = await connect(server)
        await ws.send(pack({"type": "frame", "stream": "front", "seq": 11, "ts": 123.5, "format": fmt, **extra}))
        result = await receive(ws)
        check_result(result, "image", "front", 11)
        assert result["ts"] == 123.5 and result["dropped"] == 0
        await ws.close()

    asyncio.run(scenario())


def test_scores_are_a_softmax_over_the_whole_label_set(server):
    async def scenario():
        ws = await connect(server)
        count = server.app.state.runtime.label_sources["image"].current.matrix.shape[0]
        limit = server.settings.max_top_k
        # top_k over the limit is refused like top_k 0, not capped without a word
        for wrong in (0, limit + 1):
            await ws.send(pack({"type": "config", "top_k": wrong}))
            refusal = await receive(ws)
            assert refusal["type"] == "error" and refusal["code"] == "bad_field", refusal
            assert f"between 1 and {limit}" in refusal["message"], refusal
        await ws.send(pack({"type": "config", "top_k": limit}))
        await ws.send(frame(1))
        result = await receive(ws)
        assert len(result["top"]) == min(count, limit)
        await ws.send(pack({"type": "config", "top_k": 2, "min_score": 0.0}))
        await ws.send(frame(2))
        assert len((await receive(ws))["top"]) == 2
        await ws.send(pack({"type": "config", "min_score": 1.0}))
        await ws.send(frame(3))
        assert (await receive(ws))["top"] == []
        await ws.close()
        return result

    result = asyncio.run(scenario())
    assert 0.99 < sum(t["score"] for t in result["top"]) <= 1.0001 or len(result["top"]) == 100


async def send_hop_by_hop(ws, source: np.ndarray, **extra) -> list[dict]:
    """Send 16 kHz audio in 0.25 s chunks, taking each hop's result before the next hop (latest wins would
    otherwise replace a waiting window with the next)."""
    results = []
    for seq, start in enumerate(range(0, len(source), 4000)):
        await ws.send(audio(seq, source[start : start + 4000], ts=float(seq), **extra))
        if seq % 4 == 3:
            results.append(await receive_until(ws, lambda m: m["type"] == "result"))
    return results


def test_audio_results_come_every_hop_from_the_first(server):
    async def scenario():
        ws = await connect(server)
        results = await send_hop_by_hop(ws, tone(440, 3.0, 16000), stream="desk")
        await ws.close()
        return results

    first, second, third = asyncio.run(scenario())
    check_result(first, "audio", "desk", first["seq"])
    assert first["window_s"] == pytest.approx(1.0, abs=0.05)  # one hop (less what the resampler holds back)
    assert first["ts"] == float(first["seq"])
    assert third["window_s"] > second["window_s"] > first["window_s"] and second["seq"] > first["seq"]


ERROR_CASES = [
    (b"\xc1\xc1", "bad_msgpack", None),
    (pack([1, 2]), "bad_message", None),
    (pack({"type": "teleport", "seq": 5}), "unknown_type", 5),
    (pack({"type": "frame", "seq": 6, "ts": 0, "format": "jpeg"}), "bad_field", 6),
    (pack({"type": "frame", "seq": 7, "ts": "x", "format": "jpeg", "data": b"1"}), "bad_field", 7),
    (pack({"type": "frame", "seq": 8, "ts": 0, "format": "jpeg", "data": b"garbage"}), "bad_image", 8),
    (pack({"type": "frame", "seq": 9, "ts": 0, "format": "jpeg", "data": jpeg()[:300]}), "bad_image", 9),
    (pack({"type": "frame", "seq": 10, "ts": 0, "format": "jpeg", "data": jpeg(size=(3000, 2000))}), "too_large", 10),
    (
        pack(
            {"type": "audio", "seq": 11, "ts": 0, "sample_rate": 16000, "channels": 1, "dtype": "int16", "data": b"\0"}
        ),
        "bad_audio",
        11,
    ),
    (
        pack(
            {
                "type": "audio",
                "seq": 12,
                "ts": 0,
                "sample_rate": 8000,
                "channels": 1,
                "dtype": "float32",
                "data": np.full(4, np.nan, "<f4").tobytes(),
            }
        ),
        "bad_audio",
        12,
    ),
    (
        pack(
            {
                "type": "audio",
                "seq": 13,
                "ts": 0,
                "sample_rate": 8000,
                "channels": 1,
                "dtype": "int16",
                "data": b"\0\0" * 8000 * 3,
            }
        ),
        "too_large",
        13,
    ),
    (pack({"type": "config", "top_k": -1}), "bad_field", None),
]


def test_every_error_case_answers_and_keeps_the_connection(settings):
    with live_server(replace(settings, max_image_pixels=1_000_000, max_audio_chunk_seconds=2.0)) as server:

        async def scenario():
            ws = await connect(server)
            for raw, code, seq in ERROR_CASES:
                await ws.send(raw)
                reply = await receive(ws)
                assert reply["type"] == "error", (code, reply)
                assert reply["code"] == code, reply
                assert reply.get("seq") == seq
                assert reply["message"]
            await ws.send("a text message")
            reply = await receive(ws)
            assert (reply["type"], reply["code"]) == ("error", "bad_message")
            # still usable after all that
            await ws.send(pack({"type": "ping", "ts": 1.25}))
            pong = await receive(ws)
            assert pong["type"] == "pong" and pong["ts"] == 1.25 and pong["server_ts"] > 0
            await ws.send(frame(99))
            check_result(await receive(ws), "image", "camera", 99)
            await ws.close()

        asyncio.run(scenario())


def test_modality_not_served(settings):
    with live_server(replace(settings, no_audio=True)) as server:

        async def scenario():
            async with websockets.connect(server.ws) as ws:
                welcome = await receive(ws)
                assert set(welcome["modalities"]) == {"image"}
                await ws.send(audio(1, tone(440, 0.1, 16000)))
                reply = await receive(ws)
                assert (reply["code"], reply["seq"]) == ("not_served", 1)

        asyncio.run(scenario())


def test_oversize_message_is_refused_without_harming_others(settings):
    with live_server(replace(settings, max_message_bytes=200_000)) as server:

        async def scenario():
            victim = await connect(server)
            bystander = await connect(server)
            await victim.send(pack({"type": "frame", "seq": 1, "ts": 0, "format": "jpeg", "data": b"\0" * 300_000}))
            with pytest.raises(websockets.ConnectionClosed) as info:
                await receive(victim)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1009
            await bystander.send(frame(1))
            check_result(await receive(bystander), "image", "camera", 1)
            await bystander.close()

        asyncio.run(scenario())


def test_latest_frame_wins_and_every_frame_is_accounted_for(server):
    big = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (480, 640, 3), np.uint8)).save(big, "JPEG")

    async def scenario():
        ws = await connect(server)
        sent = 40
        for seq in range(sent):
            await ws.send(frame(seq, big.getvalue()))
        results = []
        while sum(1 + r["dropped"] for r in results) < sent:
            results.append(await receive(ws))
        await ws.close()
        return sent, results

    sent, results = asyncio.run(scenario())
    seqs = [r["seq"] for r in results]
    assert seqs == sorted(seqs) and seqs[-1] == sent - 1
    assert sum(1 + r["dropped"] for r in results) == sent


def test_several_clients_at_once_each_get_their_own_results(server):
    async def client(n: int):
        ws = await connect(server)
        await ws.send(pack({"type": "config", "top_k": n}))
        got = []
        for seq in range(5):
            await ws.send(frame(seq, jpeg((n * 40, 100, 200 - n * 30))))
            got.append(await receive(ws))
            if n % 2:
                await ws.send(audio(seq, tone(300 * n, 1.2, 16000), stream=f"mic{n}"))
                got.append(await receive_until(ws, lambda m: m["type"] == "result" and m["modality"] == "audio"))
        await ws.close()
        return n, got

    async def scenario():
        return await asyncio.gather(*(client(n) for n in range(1, 6)))

    for n, results in asyncio.run(scenario()):
        assert all(len(r["top"]) == n for r in results)
        assert [r["seq"] for r in results if r["modality"] == "image"] == list(range(5))
        assert all(r["stream"] == f"mic{n}" for r in results if r["modality"] == "audio")


def test_a_client_that_vanishes_mid_inference_does_not_disturb_another(server):
    async def scenario():
        for _ in range(5):
            quitter = await connect(server)
            await quitter.send(frame(1))
            quitter.transport.abort()  # gone without a closing handshake
        steady = await connect(server)
        for seq in range(3):
            await steady.send(frame(seq))
            check_result(await receive(steady), "image", "camera", seq)
        await steady.close()

    asyncio.run(scenario())
    assert httpx.get(f"{server.http}/health").json()["clients"] == 0


def test_pings_answered_while_the_model_is_busy(server):
    async def scenario():
        busy = await connect(server)
        pinger = await connect(server)
        for seq in range(20):
            await busy.send(frame(seq))
        started = time.perf_counter()
        await pinger.send(pack({"type": "ping", "ts": 1}))
        assert (await receive(pinger))["type"] == "pong"
        await busy.close()
        await pinger.close()
        return time.perf_counter() - started

    asyncio.run(scenario())


def test_end_classifies_the_last_partial_hop_then_says_ended(server):
    async def scenario():
        ws = await connect(server)
        results = await send_hop_by_hop(ws, tone(440, 3.5, 16000))
        await ws.send(pack({"type": "end", "modality": "audio", "stream": "mic", "seq": 99}))
        tail = await receive_until(ws, lambda m: m["type"] in ("result", "ended"))
        ended = await receive_until(ws, lambda m: m["type"] == "ended")
        await ws.send(pack({"type": "end", "modality": "image", "stream": "never-used"}))
        nothing_held = await receive(ws)
        await ws.close()
        return results, tail, ended, nothing_held

    results, tail, ended, nothing_held = asyncio.run(scenario())
    assert [round(r["window_s"]) for r in results] == [1, 2, 3]
    assert tail["type"] == "result" and tail["seq"] == 99 and abs(tail["window_s"] - 3.5) < 0.05
    assert ended == {"type": "ended", "modality": "audio", "stream": "mic"}
    assert nothing_held == {"type": "ended", "modality": "image", "stream": "never-used"}


def test_errors_name_the_modality_and_stream_of_the_input(server):
    """An audio error with seq 3 once freed camera frame 3 in clients that count seq per connection."""

    async def scenario():
        ws = await connect(server)
        await ws.send(pack({"type": "audio", "stream": "desk", "seq": 3, "ts": 0.0, "sample_rate": 16000,
                            "channels": 1, "dtype": "int16", "data": b"\0\0\0"}))  # fmt: skip
        bad_audio = await receive(ws)
        await ws.send(frame(3, data=b"not a jpeg", stream="door"))
        bad_image = await receive(ws)
        await ws.send(pack({"type": "frame", "seq": 4, "stream": "door", "ts": 0.0, "format": "gif", "data": b"x"}))
        bad_field = await receive(ws)
        await ws.close()
        return bad_audio, bad_image, bad_field

    bad_audio, bad_image, bad_field = asyncio.run(scenario())
    assert (bad_audio["code"], bad_audio["seq"], bad_audio["modality"], bad_audio["stream"]) == (
        "bad_audio", 3, "audio", "desk"
    )  # fmt: skip
    assert (bad_image["code"], bad_image["seq"], bad_image["modality"], bad_image["stream"]) == (
        "bad_image", 3, "image", "door"
    )  # fmt: skip
    assert (bad_field["code"], bad_field["modality"], bad_field["stream"]) == ("bad_field", "image", "door")


class Recording:
    """A per-stream consumer, as the events layer will be: it sees every label's score of every input."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []

    def consume(self, seq, ts, at, scores):
        self.seen.append((seq, len(scores.scores)))
        return [{"type": "note", "seq": seq, "labels": len(scores.scores)}]

    def silent(self, seq, ts, at):
        return []

    def close(self):
        return []


def test_stream_consumers_see_the_whole_label_set_not_only_the_top(server):
    runtime = server.app.state.runtime
    recorders: dict = {}
    runtime.consumer_factories.append(lambda key: recorders.setdefault(key.name, Recording()))
    count = len(runtime.label_sources["image"].current.names)

    async def scenario():
        ws = await connect(server)
        await ws.send(pack({"type": "config", "top_k": 1}))
        await ws.send(frame(1, stream="porch"))
        result = await receive_until(ws, lambda m: m["type"] == "result")
        note = await receive(ws)
        await ws.close()
        return result, note

    result, note = asyncio.run(scenario())
    assert len(result["top"]) == 1
    assert recorders["porch"].seen == [(1, count)] and count > 1
    assert note == {"type": "note", "seq": 1, "labels": count}  # sent after the result


def test_every_call_into_a_model_comes_from_its_one_thread(server):
    """torch gives each calling thread an OpenMP team of its own: a second calling thread slowed the forward."""
    import threading

    runtime = server.app.state.runtime
    encoder = runtime.encoders["image"]
    callers: set[str] = set()
    for method in ("prepare", "encode", "encode_text"):
        original = getattr(encoder, method)

        def recorded(*args, _original=original):
            callers.add(threading.current_thread().name)
            return _original(*args)

        setattr(encoder, method, recorded)

    async def scenario():
        ws = await connect(server)
        await ws.send(frame(1))
        await receive_until(ws, lambda m: m["type"] == "result")
        labels = server.settings.image_labels
        labels.write_text(labels.read_text() + "\nzebra crossing at night\n")
        await receive_until(ws, lambda m: m["type"] == "labels", timeout=20)
        await ws.close()

    asyncio.run(scenario())
    files = {"file": ("a.jpg", jpeg(), "image/jpeg")}
    assert (
        httpx.post(f"{server.http}/v1/classify/image", files=files, data={"labels": "a new label"}).status_code == 200
    )
    assert httpx.post(f"{server.http}/v1/embed/text", json={"texts": ["some text"]}).status_code == 200
    assert len(callers) == 1 and next(iter(callers)).startswith("model-image"), callers


def test_streamed_audio_features_score_as_the_stock_extractor_would(server):
    runtime = server.app.state.runtime
    encoder = runtime.encoders["audio"]
    labels = runtime.label_sources["audio"].current
    samples = tone(660, 1.0, 48000) + tone(3000, 1.0, 48000, amplitude=0.1)
    raw = {"type": "audio", "seq": 0, "ts": 0.0, "sample_rate": 48000, "channels": 1, "dtype": "float32"}

    async def scenario():
        ws = await connect(server)
        await ws.send(pack({**raw, "data": samples.astype("<f4").tobytes()}))
        result = await receive_until(ws, lambda m: m["type"] == "result")
        await ws.close()
        return result

    result = asyncio.run(scenario())
    reference = encoder.encode(encoder.prepare([samples]))[0]  # the stock feature extractor on the same window
    expected = {name: float(reference @ row) for name, row in zip(labels.names, labels.matrix, strict=True)}
    assert result["window_s"] == 1.0
    for entry in result["top"]:
        assert abs(entry["similarity"] - expected[entry["label"]]) < 1e-4
