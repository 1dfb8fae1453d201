"""The HTTP API over a real server, with httpx."""

from __future__ import annotations

import asyncio
import io
import re
import shlex
import shutil
import subprocess
from dataclasses import replace

import httpx
import msgpack
import numpy as np
import pytest
import soundfile

from .helpers import REPO, connect, jpeg, live_server, pack, receive, tone

CAT = (REPO / "samples" / "cat.jpg").read_bytes()


def post(server, path: str, **kwargs) -> httpx.Response:
    return httpx.post(f"{server.http}{path}", timeout=60, **kwargs)


def wav_bytes(seconds: float, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, tone(440, seconds, rate), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def error_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body["error"]) == {"code", "message"} and body["error"]["message"]
    return body["error"]["code"]


def test_classify_image_raw_and_multipart_agree(server):
    raw = post(server, "/v1/classify/image?top_k=3", content=CAT, headers={"content-type": "image/jpeg"})
    form = post(server, "/v1/classify/image", files={"file": ("cat.jpg", CAT, "image/jpeg")}, data={"top_k": "3"})
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
            "total_ms",
        }
    assert raw.json()["top"] == form.json()["top"]


def test_http_and_stream_give_the_same_scores(server):
    http = post(server, "/v1/classify/image?top_k=5", content=CAT).json()["top"]

    async def stream():
        ws = await connect(server)
        await ws.send(pack({"type": "frame", "seq": 1, "ts": 0.0, "format": "jpeg", "data": CAT}))
        result = await receive(ws)
        await ws.close()
        return result["top"]

    streamed = asyncio.run(stream())
    assert [t["label"] for t in http] == [t["label"] for t in streamed]
    np.testing.assert_allclose([t["score"] for t in http], [t["score"] for t in streamed], atol=1e-6)
    np.testing.assert_allclose([t["similarity"] for t in http], [t["similarity"] for t in streamed], atol=1e-6)


def test_adhoc_labels_go_through_the_embedding_cache(server):
    cache = server.app.state.runtime.cache
    labels = {"labels": ["tabby cat", "golden retriever", "sports car = a photo of a fast red car."]}
    first = post(server, "/v1/classify/image", files={"file": ("c.jpg", CAT)}, data=labels)
    assert first.status_code == 200, first.text
    body = first.json()
    assert {t["label"] for t in body["top"]} == {"tabby cat", "golden retriever", "sports car"}
    assert "labels_version" not in body
    assert abs(sum(t["score"] for t in body["top"]) - 1) < 1e-6
    size = len(cache)
    again = post(server, "/v1/classify/image", files={"file": ("c.jpg", CAT)}, data=labels)
    assert again.json()["top"] == body["top"] and len(cache) == size  # nothing encoded twice


def test_classify_audio_file_in_windows_and_raw_pcm(server):
    response = post(
        server, "/v1/classify/audio?top_k=2", content=wav_bytes(12.0), headers={"content-type": "audio/wav"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["duration_s"] == pytest.approx(12.0, abs=0.01)
    assert [(w["start_s"], w["end_s"]) for w in body["windows"]] == [(0, 5), (5, 10), (10, 12)]
    assert all(len(w["top"]) == 2 for w in body["windows"]) and len(body["top"]) == 2
    pcm = (tone(440, 2.0, 8000) * 32767).astype("<i2").tobytes()
    raw = post(server, "/v1/classify/audio?sample_rate=8000&channels=1&dtype=int16", content=pcm)
    assert raw.status_code == 200, raw.text
    assert raw.json()["duration_s"] == pytest.approx(2.0, abs=0.01) and len(raw.json()["windows"]) == 1


def test_match_verdicts_follow_the_cosine_of_the_embeddings(server):
    texts = ["a photo of a cat.", "a diagram of a circuit."]
    response = post(server, "/v1/match", files={"file": ("c.jpg", CAT)}, data={"texts": texts, "threshold": "0.0"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["threshold"] == 0.0
    image = np.array(post(server, "/v1/embed/image", content=CAT).json()["embeddings"][0])
    text = np.array(post(server, "/v1/embed/text", json={"texts": texts}).json()["embeddings"])
    for result, expected in zip(body["results"], text @ image, strict=True):
        assert result["similarity"] == pytest.approx(expected, abs=1e-5)
        assert result["verdict"] == ("match" if result["similarity"] >= 0 else "mismatch")


def test_embeddings_json_and_msgpack(server):
    as_json = post(server, "/v1/embed/image", content=CAT).json()
    vector = np.array(as_json["embeddings"][0])
    assert as_json["dim"] == len(vector) == 32 and abs(np.linalg.norm(vector) - 1) < 1e-5
    packed = post(server, "/v1/embed/image", content=CAT, headers={"accept": "application/msgpack"})
    assert packed.headers["content-type"] == "application/msgpack"
    np.testing.assert_allclose(msgpack.unpackb(packed.content)["embeddings"][0], vector, atol=1e-6)
    audio = post(server, "/v1/embed/audio", content=wav_bytes(7.0)).json()
    assert audio["windows"] == 2 and abs(np.linalg.norm(audio["embeddings"][0]) - 1) < 1e-5
    texts = post(server, "/v1/embed/text", json={"texts": ["dog barking", "rain"], "modality": "audio"}).json()
    assert texts["dim"] == 16 and len(texts["embeddings"]) == 2


def test_labels_listing(server):
    body = httpx.get(f"{server.http}/v1/labels").json()
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
        ("/v1/classify/image?min_score=lots", {"content": CAT}, 400, "bad_field"),
        ("/v1/classify/image?labels=%40template%20x", {"content": CAT}, 400, "bad_field"),
        ("/v1/classify/audio", {"content": b"RIFF not really a wav"}, 400, "bad_audio"),
        ("/v1/classify/audio", {"content": b"x", "headers": {"content-type": "video/mp4"}}, 415, "unsupported_type"),
        ("/v1/classify/audio?sample_rate=16000", {"content": b"\0\0\0"}, 400, "bad_audio"),
        ("/v1/classify/audio?sample_rate=16000&dtype=int8", {"content": b"\0\0"}, 400, "bad_field"),
        ("/v1/match", {"content": CAT}, 400, "bad_field"),
        ("/v1/embed/text", {"content": b"not json"}, 400, "bad_message"),
        ("/v1/embed/text", {"json": {"texts": []}}, 400, "bad_field"),
        ("/v1/embed/text", {"json": {"texts": ["a"], "modality": "smell"}}, 400, "bad_field"),
    ],
)  # fmt: skip
def test_errors(server, path, kwargs, status, code):
    assert error_of(post(server, path, **kwargs), status) == code


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
        runtime = server.app.state.runtime
        runtime.state = "loading"  # as during start-up
        try:
            assert error_of(post(server, "/v1/classify/image", content=CAT), 503) == "loading"
        finally:
            runtime.state = "ok"


def test_openapi_lists_every_endpoint(server):
    schema = httpx.get(f"{server.http}/openapi.json").json()
    assert schema["openapi"].startswith("3.")
    assert set(schema["paths"]) == {
        "/v1/classify/image", "/v1/classify/audio", "/v1/match",
        "/v1/embed/image", "/v1/embed/audio", "/v1/embed/text", "/v1/labels", "/v1/labels/{modality}",
    }  # fmt: skip


def readme_curl_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## HTTP API") :]
    section = section[: section.index("\n## ", 4)]
    return re.findall(r"^curl .+$", section, flags=re.M)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed (.ci/run installs it)")
def test_readme_curl_examples_work_as_written(server):
    commands = readme_curl_commands()
    assert len(commands) >= 7
    covered = set()
    for command in commands:
        args = shlex.split(command.replace("127.0.0.1:8000", f"127.0.0.1:{server.settings.port}"))
        done = subprocess.run([*args, "--fail-with-body", "-sS"], cwd=REPO, capture_output=True, timeout=60)
        assert done.returncode == 0, (command, done.stdout, done.stderr)
        covered.add(re.search(r"/v1/[a-z/]+", command).group(0))  # type: ignore[union-attr]
    assert covered == {
        "/v1/classify/image", "/v1/classify/audio", "/v1/match",
        "/v1/embed/image", "/v1/embed/audio", "/v1/embed/text", "/v1/labels",
    }  # fmt: skip
