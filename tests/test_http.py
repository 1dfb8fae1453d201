"""The HTTP API over a real server, with httpx."""

from __future__ import annotations

import asyncio
import io
import json
import re
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import httpx
import msgpack
import numpy as np
import pytest
import soundfile
from starlette.routing import Route

from server import http_api
from server.audio import decode_sound_file, resample
from server.settings import Settings

from .helpers import REPO, LiveServer, connect, jpeg, live_server, pack, receive, tone

CAT = (REPO / "samples" / "cat.jpg").read_bytes()
NOT_A_FILE = bytes(range(256)) * 8  # no image or sound signature, no header any decoder takes


@pytest.fixture(scope="module")
def api(image_model: str, audio_model: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for the tests that only read: it saves a start-up per test."""
    root = tmp_path_factory.mktemp("http")
    (root / "labels").mkdir()
    for name in ("image.txt", "audio.txt"):
        shutil.copy(REPO / "labels" / name, root / "labels" / name)
    settings = Settings(
        image_model=image_model,
        audio_model=audio_model,
        image_labels=root / "labels" / "image.txt",
        audio_labels=root / "labels" / "audio.txt",
        label_cache=str(root / "label-cache"),
        data_dir=str(root / "data"),
    )
    with live_server(settings) as running:
        yield running


def post(server, path: str, **kwargs) -> httpx.Response:
    return httpx.post(f"{server.http}{path}", timeout=60, **kwargs)


def wav_bytes(seconds: float, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, tone(440, seconds, rate), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def error_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"} and body["error"]["message"]
    return body["error"]["code"]


def labels_of(response: httpx.Response) -> set[str]:
    assert response.status_code == 200, response.text
    return {t["label"] for t in response.json()["top"]}


def test_classify_image_raw_and_multipart_agree(api):
    raw = post(api, "/v1/classify/image?top_k=3", content=CAT, headers={"content-type": "image/jpeg"})
    form = post(api, "/v1/classify/image", files={"file": ("cat.jpg", CAT, "image/jpeg")}, data={"top_k": "3"})
    for response in (raw, form):
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["top"]) == 3 and body["labels_version"] == 1
        assert set(body["timings"]) == {
            "decode_ms",
            "queue_ms",
            "preprocess_ms",
            "encode_ms",
            "similarity_ms",
            "text_ms",
            "total_ms",
        }
        assert body["timings"]["text_ms"] == 0  # the file's labels were encoded when it loaded
        count = len(httpx.get(f"{api.http}/v1/labels").json()["image"]["labels"])
        assert body["labels"] == {"source": "file", "count": count, "encoded": 0, "cached": count}
    assert raw.json()["top"] == form.json()["top"]


def test_http_and_stream_give_the_same_scores(api):
    http = post(api, "/v1/classify/image?top_k=5", content=CAT).json()["top"]

    async def stream():
        ws = await connect(api)
        await ws.send(pack({"type": "frame", "seq": 1, "ts": 0.0, "format": "jpeg", "data": CAT}))
        result = await receive(ws)
        await ws.close()
        return result["top"]

    streamed = asyncio.run(stream())
    assert [t["label"] for t in http] == [t["label"] for t in streamed]
    np.testing.assert_allclose([t["score"] for t in http], [t["score"] for t in streamed], atol=1e-6)
    np.testing.assert_allclose([t["similarity"] for t in http], [t["similarity"] for t in streamed], atol=1e-6)


def test_adhoc_labels_go_through_the_embedding_cache(api):
    cache = api.app.state.runtime.cache
    labels = {"labels": ["tabby cat", "golden retriever", "sports car = a photo of a fast red car."]}
    first = post(api, "/v1/classify/image", files={"file": ("c.jpg", CAT)}, data=labels)
    assert first.status_code == 200, first.text
    body = first.json()
    assert {t["label"] for t in body["top"]} == {"tabby cat", "golden retriever", "sports car"}
    assert "labels_version" not in body
    assert abs(sum(t["score"] for t in body["top"]) - 1) < 1e-6
    size = len(cache)
    again = post(api, "/v1/classify/image", files={"file": ("c.jpg", CAT)}, data=labels)
    assert again.json()["top"] == body["top"] and len(cache) == size  # nothing encoded twice


def test_a_request_says_how_many_of_its_labels_were_encoded_and_how_long_it_took(api):
    """The demo's "10, then 100, then 500 labels": text-encoding time against the labels it encoded."""

    def classify(path: str, body: bytes, labels: list[str], **params: str) -> dict:
        response = post(api, path, files={"file": ("f", body)}, data={"labels": labels, **params})
        assert response.status_code == 200, response.text
        return response.json()

    names = [f"demo thing {i}" for i in range(12)]  # in no label file: nothing of them is cached yet
    first = classify("/v1/classify/image", CAT, names[:8])
    assert first["labels"] == {"source": "request", "count": 8, "encoded": 8, "cached": 0}
    assert first["timings"]["text_ms"] > 0
    assert first["timings"]["total_ms"] >= first["timings"]["text_ms"]
    more = classify("/v1/classify/image", CAT, names)
    assert more["labels"] == {"source": "request", "count": 12, "encoded": 4, "cached": 8}
    again = classify("/v1/classify/image", CAT, names)
    assert again["labels"] == {"source": "request", "count": 12, "encoded": 0, "cached": 12}
    assert again["top"] == more["top"]
    afresh = classify("/v1/classify/image", CAT, names, encode="all")  # the text tower timed on all of them
    assert afresh["labels"] == {"source": "request", "count": 12, "encoded": 12, "cached": 0}
    np.testing.assert_allclose(
        [t["score"] for t in afresh["top"]], [t["score"] for t in again["top"]], atol=1e-5
    )  # the same embeddings, encoded again

    # A label counts as encoded when any of its prompts had to be; a file label's prompt is cached too.
    prompts = ["zero = a photo of a demo thing 0. | a sketch of demo thing 0.", "nought = a photo of a demo thing 0."]
    mixed = classify("/v1/classify/image", CAT, [*prompts, "dog"])
    assert mixed["labels"] == {"source": "request", "count": 3, "encoded": 1, "cached": 2}

    # Audio: the clip's windows share the request's one encoding.
    sounds = ["demo hum 1", "demo hum 2", "rain"]
    clip = classify("/v1/classify/audio", wav_bytes(7.0), sounds, top_k="3")
    assert clip["labels"]["count"] == 3 and clip["labels"]["encoded"] + clip["labels"]["cached"] == 3
    assert clip["labels"]["encoded"] >= 2 and len(clip["windows"]) == 2
    assert classify("/v1/classify/audio", wav_bytes(1.0), sounds)["labels"]["encoded"] == 0


def test_labels_and_texts_may_come_as_one_json_array(api):
    """`-F 'labels=["cat","dog"]'`, the form of the CLIP and CLAP demo services, was one label named
    `["cat","dog"]`; a JSON array in a field or query value is now the list it spells."""
    cat_dog = {"tabby cat", "golden retriever"}
    as_json = json.dumps(sorted(cat_dog))
    assert labels_of(post(api, "/v1/classify/image", files={"file": CAT}, data={"labels": as_json})) == cat_dog
    assert labels_of(post(api, "/v1/classify/image", params={"labels": as_json}, content=CAT)) == cat_dog
    mixed = {"labels": [as_json, "sports car"]}  # a JSON array and a plain value together
    assert labels_of(post(api, "/v1/classify/image", files={"file": CAT}, data=mixed)) == {*cat_dog, "sports car"}
    audio = post(api, "/v1/classify/audio", params={"labels": '["rain", "dog barking"]'}, content=wav_bytes(1.0))
    assert labels_of(audio) == {"rain", "dog barking"}
    texts = ["a photo of a cat.", "a diagram of a circuit."]
    for where in ({"data": {"texts": json.dumps(texts)}}, {"params": {"texts": json.dumps(texts)}}):
        matched = post(api, "/v1/match", files={"file": CAT}, **where)
        assert matched.status_code == 200, matched.text
        assert [r["text"] for r in matched.json()["results"]] == texts


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("labels", '["cat", "dog"'),  # starts like JSON, does not parse
        ("labels", '{"cat": 1}'),  # JSON, not an array
        ("labels", "[1, 2]"),  # not strings
        ("labels", '["cat", ""]'),  # a blank label
        ("labels", "[]"),  # no labels
        ("labels", '["@template x {}"]'),  # not a label line
        ("texts", '["a dog", 3]'),
        ("texts", ' ["a dog"'),
    ],
)
def test_a_value_that_starts_like_json_must_be_an_array_of_strings(api, field, value):
    path = "/v1/match" if field == "texts" else "/v1/classify/image"
    response = post(api, path, files={"file": CAT}, data={field: value})
    assert error_of(response, 400) == "bad_field"
    assert f"'{field}'" in response.json()["error"]["message"]


def test_classify_audio_file_in_windows_and_raw_pcm(api):
    response = post(api, "/v1/classify/audio?top_k=2", content=wav_bytes(12.0), headers={"content-type": "audio/wav"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["duration_s"] == pytest.approx(12.0, abs=0.01)
    assert [(w["start_s"], w["end_s"]) for w in body["windows"]] == [(0, 5), (5, 10), (10, 12)]
    assert all(len(w["top"]) == 2 for w in body["windows"]) and len(body["top"]) == 2
    pcm = (tone(440, 2.0, 8000) * 32767).astype("<i2").tobytes()
    raw = post(api, "/v1/classify/audio?sample_rate=8000&channels=1&dtype=int16", content=pcm)
    assert raw.status_code == 200, raw.text
    assert raw.json()["duration_s"] == pytest.approx(2.0, abs=0.01) and len(raw.json()["windows"]) == 1
    # A sound file says its own rate: PCM options beside it are checked, and not used.
    wav = {"content": wav_bytes(2.0), "headers": {"content-type": "audio/wav"}}
    typed = post(api, "/v1/classify/audio?sample_rate=8000", **wav)
    assert typed.status_code == 200 and typed.json()["duration_s"] == pytest.approx(2.0, abs=0.01)


def test_match_verdicts_follow_the_cosine_of_the_embeddings(api):
    texts = ["a photo of a cat.", "a diagram of a circuit."]
    response = post(api, "/v1/match", files={"file": ("c.jpg", CAT)}, data={"texts": texts, "threshold": "0.0"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["threshold"] == 0.0
    image = np.array(post(api, "/v1/embed/image", content=CAT).json()["embeddings"][0])
    text = np.array(post(api, "/v1/embed/text", json={"texts": texts}).json()["embeddings"])
    for result, expected in zip(body["results"], text @ image, strict=True):
        assert result["similarity"] == pytest.approx(expected, abs=1e-5)
        assert result["verdict"] == ("match" if result["similarity"] >= 0 else "mismatch")


def test_embeddings_json_and_msgpack(api):
    as_json = post(api, "/v1/embed/image", content=CAT).json()
    vector = np.array(as_json["embeddings"][0])
    assert as_json["dim"] == len(vector) == 32 and abs(np.linalg.norm(vector) - 1) < 1e-5
    packed = post(api, "/v1/embed/image", content=CAT, headers={"accept": "application/msgpack"})
    assert packed.headers["content-type"] == "application/msgpack"
    np.testing.assert_allclose(msgpack.unpackb(packed.content)["embeddings"][0], vector, atol=1e-6)
    audio = post(api, "/v1/embed/audio", content=wav_bytes(7.0)).json()
    assert audio["windows"] == 2 and abs(np.linalg.norm(audio["embeddings"][0]) - 1) < 1e-5
    texts = post(api, "/v1/embed/text", json={"texts": ["dog barking", "rain"], "modality": "audio"}).json()
    assert texts["dim"] == 16 and len(texts["embeddings"]) == 2


def test_labels_listing(api):
    body = httpx.get(f"{api.http}/v1/labels").json()
    image = body["image"]
    assert image["version"] == 1 and image["count"] == len(image["labels"])
    dog = next(entry for entry in image["labels"] if entry["label"] == "dog")
    assert dog["prompts"] == ["a photo of a dog.", "a blurry photo of a dog.", "a close-up photo of a dog."]


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "code"),
    [
        ("/v1/classify/image", {"content": CAT[:400]}, 400, "bad_image"),
        ("/v1/classify/image", {"content": b"GIF89a....", "headers": {"content-type": "image/gif"}}, 415,
         "unsupported_type"),
        ("/v1/classify/image", {"content": CAT, "headers": {"content-type": "text/plain"}}, 415, "unsupported_type"),
        ("/v1/classify/image", {"content": b""}, 400, "bad_field"),
        ("/v1/classify/image", {"files": {"other": ("x", CAT)}}, 400, "bad_field"),
        ("/v1/classify/image?top_k=0", {"content": CAT}, 400, "bad_field"),
        ("/v1/classify/image?top_k=2.5", {"content": CAT}, 400, "bad_field"),
        ("/v1/classify/image?min_score=lots", {"content": CAT}, 400, "bad_field"),
        ("/v1/classify/image?min_score=1.5", {"content": CAT}, 400, "bad_field"),
        ("/v1/classify/image?labels=%40template%20x", {"content": CAT}, 400, "bad_field"),
        ("/v1/classify/image?labels=", {"content": CAT}, 400, "bad_field"),
        ("/v1/classify/audio", {"content": b"RIFF not really a wav"}, 400, "bad_audio"),
        ("/v1/classify/audio", {"content": b"x", "headers": {"content-type": "video/mp4"}}, 415, "unsupported_type"),
        ("/v1/classify/audio?sample_rate=16000", {"content": b"\0\0\0"}, 400, "bad_audio"),
        ("/v1/classify/audio?sample_rate=16000&dtype=int8", {"content": b"\0\0"}, 400, "bad_field"),
        ("/v1/classify/audio?channels=0", {"content": wav_bytes(1.0)}, 400, "bad_field"),  # checked, used or not
        ("/v1/match", {"content": CAT}, 400, "bad_field"),
        ("/v1/match?texts=a&threshold=2", {"content": CAT}, 400, "bad_field"),
        ("/v1/embed/text", {"content": b"not json"}, 400, "bad_message"),
        ("/v1/embed/text", {"content": b"[" * 100_000}, 400, "bad_message"),
        ("/v1/embed/text", {"json": ["a"]}, 400, "bad_message"),
        ("/v1/embed/text", {"json": {"texts": []}}, 400, "bad_field"),
        ("/v1/embed/text", {"json": {"texts": [" "]}}, 400, "bad_field"),
        ("/v1/embed/text", {"json": {"texts": "a dog"}}, 400, "bad_field"),
        ("/v1/embed/text", {"json": {"texts": ["a"] * 1001}}, 400, "bad_field"),
        ("/v1/embed/text", {"json": {"texts": ["a"], "modality": "smell"}}, 400, "bad_field"),
    ],
)  # fmt: skip
def test_errors(api, path, kwargs, status, code):
    assert error_of(post(api, path, **kwargs), status) == code


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"content": NOT_A_FILE, "headers": {"content-type": "image/jpeg"}}, 400, "bad_image"),
        ({"content": NOT_A_FILE, "headers": {"content-type": "image/png"}}, 400, "bad_image"),
        ({"content": NOT_A_FILE}, 400, "bad_image"),  # no type: the bytes say what they are, and they do not
        ({"content": NOT_A_FILE, "headers": {"content-type": "application/octet-stream"}}, 400, "bad_image"),
        ({"files": {"file": ("x.jpg", NOT_A_FILE, "image/jpeg")}}, 400, "bad_image"),
        ({"content": CAT, "headers": {"content-type": "image/gif"}}, 415, "unsupported_type"),
        ({"content": CAT, "headers": {"content-type": "application/pdf"}}, 415, "unsupported_type"),
    ],
)
def test_an_image_type_that_does_not_decode_is_a_bad_image_not_a_wrong_type(api, kwargs, status, code):
    """Random bytes sent as image/jpeg were told "send a JPEG, PNG or WebP image (got image/jpeg)"."""
    assert error_of(post(api, "/v1/embed/image", **kwargs), status) == code


@pytest.mark.parametrize("content_type", [None, "application/octet-stream", "audio/wav"])
def test_bytes_that_are_not_audio_get_a_clean_message(api, content_type):
    """libsndfile's message named the in-memory file: `Error opening <_io.BytesIO object at 0x7f...>`."""
    headers = {"content-type": content_type} if content_type else {}
    response = post(api, "/v1/classify/audio", content=NOT_A_FILE, headers=headers)
    assert error_of(response, 400) == "bad_audio"
    message = response.json()["error"]["message"]
    assert "BytesIO" not in message and "0x" not in message and "<" not in message, message


@pytest.mark.parametrize("path", ["/v1/classify/image", "/v1/classify/audio"])
def test_top_k_outside_its_range_is_refused_both_ways(api, path):
    """top_k=0 was an error but top_k=500 was capped without a word."""
    body = CAT if path.endswith("image") else wav_bytes(1.0)
    highest = api.settings.max_top_k
    for top_k in (0, highest + 1, 500):
        response = post(api, f"{path}?top_k={top_k}", content=body)
        assert error_of(response, 400) == "bad_field"
        assert response.json()["error"]["message"] == f"'top_k' must be between 1 and {highest}"
    assert post(api, f"{path}?top_k={highest}", content=body).status_code == 200


def test_a_malformed_multipart_body_is_a_400(api):
    """`-d $'--X\\r\\n-7.1e-124--X--\\r\\n'` with a multipart type answered a bare 500."""
    headers = {"content-type": "multipart/form-data; boundary=X"}
    for path in ("/v1/embed/image", "/v1/classify/audio", "/v1/match?texts=a"):
        response = post(api, path, content=b"--X\r\n-7.1e-124--X--\r\n", headers=headers)
        assert error_of(response, 400) == "bad_message"
    no_boundary = post(api, "/v1/embed/image", content=b"x", headers={"content-type": "multipart/form-data"})
    assert error_of(no_boundary, 400) == "bad_message"


def test_every_http_error_is_the_json_error_body(api, monkeypatch):
    """404 and 405 answered plain text, and so did an unexpected exception (500)."""
    assert error_of(httpx.get(f"{api.http}/no/such/route"), 404) == "not_found"
    assert error_of(httpx.get(f"{api.http}/static/no-such-file.js"), 404) == "not_found"
    wrong_method = httpx.get(f"{api.http}/v1/classify/image")
    assert error_of(wrong_method, 405) == "method_not_allowed"
    assert wrong_method.headers["allow"] == "POST"
    assert error_of(httpx.delete(f"{api.http}/v1/labels"), 405) == "method_not_allowed"

    def broken() -> dict:
        raise RuntimeError("a bug")

    monkeypatch.setattr(api.app.state.runtime, "health", broken)
    failed = httpx.get(f"{api.http}/health")
    assert error_of(failed, 500) == "internal_error"
    assert "a bug" not in failed.text  # the log has the details, not the client


def test_body_over_the_message_limit(settings):
    with live_server(replace(settings, max_message_bytes=50_000, max_image_pixels=100_000)) as server:
        assert error_of(post(server, "/v1/classify/image", content=jpeg(size=(400, 300))), 413) == "too_large"
        big = jpeg(size=(64, 48)) + b"\0" * 60_000
        assert error_of(post(server, "/v1/classify/image", content=big), 413) == "too_large"
        form = {"file": ("big.jpg", big, "image/jpeg")}
        assert error_of(post(server, "/v1/embed/image", files=form), 413) == "too_large"


def test_modality_not_served_and_loading(settings):
    with live_server(replace(settings, no_audio=True)) as server:
        assert error_of(post(server, "/v1/classify/audio", content=wav_bytes(1.0)), 404) == "not_served"
        assert error_of(post(server, "/v1/embed/text", json={"texts": ["a"], "modality": "audio"}), 404) == "not_served"
        runtime = server.app.state.runtime
        runtime.state = "loading"  # as during start-up
        try:
            loading = post(server, "/v1/classify/image", content=CAT)
            assert error_of(loading, 503) == "loading" and int(loading.headers["retry-after"]) >= 0
        finally:
            runtime.state = "ok"


def test_one_shot_requests_never_wait_for_the_batch(settings):
    """Each request waited --batch-wait-ms for other "active" streams: its own earlier requests."""
    with live_server(replace(settings, batch_wait_ms=200)) as server:
        waits = []
        for _ in range(6):
            response = post(server, "/v1/classify/image", content=CAT)
            assert response.status_code == 200, response.text
            waits.append(response.json()["timings"]["queue_ms"])
        assert max(waits) < 100, waits  # it was ~batch_wait_ms (200) each


class HeldModel:
    """Holds every batch of one model until released: a request stays inside the models as long as a test needs."""

    def __init__(self, server: LiveServer, modality: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        embedder = server.app.state.runtime.workers[modality].embedder
        embed = embedder.embed

        async def held(inputs):
            self.entered.set()
            await asyncio.to_thread(self.release.wait, 30)
            return await embed(inputs)

        monkeypatch.setattr(embedder, "embed", held)


def test_requests_past_max_requests_are_answered_busy_at_once(settings, monkeypatch):
    with live_server(replace(settings, max_requests=1)) as server:
        model = HeldModel(server, "audio", monkeypatch)
        with ThreadPoolExecutor(1) as pool:
            clip = pool.submit(post, server, "/v1/classify/audio", content=wav_bytes(30.0))  # 6 windows: one request
            try:
                assert model.entered.wait(10), "the clip never reached the model"
                started = time.monotonic()
                busy = post(server, "/v1/classify/image", content=CAT)
                assert time.monotonic() - started < 5  # answered at once, not queued
                assert error_of(busy, 503) == "busy"
                assert int(busy.headers["retry-after"]) >= 1
                assert error_of(post(server, "/v1/embed/text", json={"texts": ["a"]}), 503) == "busy"
            finally:
                model.release.set()
            assert clip.result().status_code == 200, clip.result().text
        assert post(server, "/v1/classify/image", content=CAT).status_code == 200  # the place is free again
        # Errors before the models (a bad parameter, a body that does not decode) take no place.
        assert error_of(post(server, "/v1/classify/image?top_k=0", content=CAT), 400) == "bad_field"
        assert error_of(post(server, "/v1/classify/image", content=NOT_A_FILE), 400) == "bad_image"
        assert server.app.state.http_api.in_models == 0


def test_audio_is_decoded_off_the_event_loop(api, monkeypatch):
    """A clip of up to 600 s was decoded and resampled on the event loop: every other client waited."""
    entered, release = threading.Event(), threading.Event()
    threads: list[threading.Thread] = []

    def held_decode(data: bytes):
        threads.append(threading.current_thread())
        entered.set()
        release.wait(10)  # decoding takes as long as the test needs
        return decode_sound_file(data)

    def watched_resample(samples, from_rate, to_rate):
        threads.append(threading.current_thread())
        return resample(samples, from_rate, to_rate)

    monkeypatch.setattr(http_api, "decode_sound_file", held_decode)
    monkeypatch.setattr(http_api, "resample", watched_resample)
    with ThreadPoolExecutor(1) as pool:
        clip = pool.submit(post, api, "/v1/classify/audio", content=wav_bytes(60.0, rate=44100))
        try:
            assert entered.wait(10), "decoding never started"
            started = time.monotonic()
            health = httpx.get(f"{api.http}/health", timeout=5)  # the loop must answer while the clip decodes
            assert health.status_code == 200 and time.monotonic() - started < 2
        finally:
            release.set()
        response = clip.result()
    assert response.status_code == 200, response.text
    assert response.json()["duration_s"] == pytest.approx(60.0, abs=0.01)
    assert len(threads) == 2 and api.thread not in threads  # the loop runs in the server's thread


def test_openapi_lists_every_route_of_the_api(api):
    schema = httpx.get(f"{api.http}/openapi.json").json()
    assert schema["openapi"].startswith("3.")
    routes = {
        (route.path, method.lower())
        for route in api.app.routes
        if isinstance(route, Route) and route.path.startswith("/v1/")
        for method in route.methods or ()
        if method != "HEAD"
    }
    documented = {(path, method) for path, operations in schema["paths"].items() for method in operations}
    assert routes and documented == routes


def readme_curl_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## HTTP API") :]
    section = section[: section.index("\n## ", 4)]
    return re.findall(r"^curl .+$", section, flags=re.M)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed (.ci/run installs it)")
def test_readme_curl_examples_work_as_written(api):
    commands = readme_curl_commands()
    assert len(commands) >= 7
    covered = set()
    for command in commands:
        args = shlex.split(command.replace("127.0.0.1:8000", f"127.0.0.1:{api.settings.port}"))
        done = subprocess.run([*args, "--fail-with-body", "-sS"], cwd=REPO, capture_output=True, timeout=60)
        assert done.returncode == 0, (command, done.stdout, done.stderr)
        covered.add(re.search(r"/v1/[a-z/]+", command).group(0))  # type: ignore[union-attr]
    routes = {r.path for r in api.app.routes if isinstance(r, Route) and r.path.startswith("/v1/")}
    assert covered == {path for path in routes if "{" not in path}  # all but the label editor's PUT
