"""Limits, authentication, origins, faults and shutdown, over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import httpx
import pytest
import websockets

from server.errors import CloseCode
from server.security import origin_allowed, presented_token, token_accepted

from .helpers import (
    async_wait_until,
    audio,
    connect,
    frame,
    free_port,
    live_server,
    pack,
    receive,
    receive_until,
    tone,
    wait_until,
)

TOKEN = "s3cret-token_42"


# --- the pure parts -----------------------------------------------------------------------------


def test_token_sources_and_comparison():
    assert presented_token("Bearer abc", None, []) == "abc"
    assert presented_token("bearer  abc ", None, []) == "abc"
    assert presented_token(None, "q", []) == "q"
    assert presented_token(None, None, ["sensorium.v1", "sensorium.token.xyz"]) == "xyz"
    assert presented_token("Basic abc", None, []) is None
    assert token_accepted(None, None)
    assert token_accepted("abc", "abc")
    assert not token_accepted("abc", "abd") and not token_accepted("abc", None) and not token_accepted("abc", "")


@pytest.mark.parametrize(
    ("origin", "host", "allowed", "ok"),
    [
        (None, "127.0.0.1:8000", (), True),  # not a browser
        ("http://127.0.0.1:8000", "127.0.0.1:8000", (), True),  # the server's own page
        ("http://evil.example", "127.0.0.1:8000", (), False),
        ("http://127.0.0.1:9999", "127.0.0.1:8000", (), False),  # another local port is another site
        ("https://app.example/", "127.0.0.1:8000", ("https://app.example",), True),
        ("null", "127.0.0.1:8000", (), False),
        ("http://anything.example", "h", ("*",), True),
    ],
)
def test_origins(origin, host, allowed, ok):
    assert origin_allowed(origin, host, allowed) is ok


# --- authentication and origins -------------------------------------------------------------------


async def close_code(url: str, **kwargs) -> int:
    async with websockets.connect(url, **kwargs) as ws:
        with pytest.raises(websockets.ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 10)
    assert info.value.rcvd is not None
    return info.value.rcvd.code


def test_token_on_websocket_and_http(settings):
    with live_server(replace(settings, token=TOKEN)) as server:

        async def scenario():
            assert await close_code(server.ws) == CloseCode.UNAUTHORIZED
            assert await close_code(f"{server.ws}?token=wrong") == CloseCode.UNAUTHORIZED
            for kwargs in (
                {"uri": f"{server.ws}?token={TOKEN}"},
                {"uri": server.ws, "additional_headers": {"Authorization": f"Bearer {TOKEN}"}},
                {"uri": server.ws, "subprotocols": ["sensorium.v1", f"sensorium.token.{TOKEN}"]},
            ):
                async with websockets.connect(**kwargs) as ws:
                    assert (await receive(ws))["type"] == "welcome"
                    if "subprotocols" in kwargs:
                        assert ws.subprotocol == "sensorium.v1"

        asyncio.run(scenario())
        assert httpx.get(f"{server.http}/health").status_code == 200
        for path in ("/v1/labels", "/metrics", "/openapi.json"):
            refused = httpx.get(f"{server.http}{path}")
            assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
            assert httpx.get(f"{server.http}{path}", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert httpx.get(f"{server.http}/v1/labels?token={TOKEN}").status_code == 200


def test_cross_site_origin_is_refused(settings):
    with live_server(replace(settings, allow_origin=("https://app.example",))) as server:
        own = f"http://127.0.0.1:{server.settings.port}"

        async def scenario():
            assert await close_code(server.ws, origin="http://evil.example") == CloseCode.FORBIDDEN_ORIGIN
            for origin in (own, "https://app.example"):
                async with websockets.connect(server.ws, origin=origin) as ws:
                    assert (await receive(ws))["type"] == "welcome"

        asyncio.run(scenario())


# --- limits ------------------------------------------------------------------------------------------


def test_connection_and_stream_limits(settings):
    with live_server(replace(settings, max_connections=2, max_streams=2)) as server:

        async def scenario():
            first, second = await connect(server), await connect(server)
            assert await close_code(server.ws) == CloseCode.TOO_MANY_CONNECTIONS
            for stream in ("a", "b"):
                await first.send(frame(1, stream=stream))
                assert (await receive(first))["type"] == "result"
            await first.send(frame(2, stream="c"))
            reply = await receive(first)
            assert (reply["type"], reply["code"], reply["seq"]) == ("error", "too_many_streams", 2)
            await first.send(audio(3, tone(440, 0.2, 16000), stream="a"))  # audio streams count too
            assert (await receive(first))["code"] == "too_many_streams"
            await second.close()
            runtime = server.app.state.runtime
            await async_wait_until(lambda: len(runtime.sessions) == 1, what="the closed connection's release")
            third = await connect(server)  # a slot is free again
            await third.close()
            await first.close()

        asyncio.run(scenario())


def test_idle_connections_are_closed(settings):
    with live_server(replace(settings, idle_timeout=0.5)) as server:

        async def scenario():
            ws = await connect(server)
            with pytest.raises(websockets.ConnectionClosed) as info:
                await asyncio.wait_for(ws.recv(), 5)
            assert info.value.rcvd.code == CloseCode.IDLE

        asyncio.run(scenario())


def test_a_misbehaving_client_is_closed_and_others_carry_on(settings):
    with live_server(replace(settings, max_errors=5)) as server:

        async def scenario():
            bad, good = await connect(server), await connect(server)
            for _ in range(6):
                await bad.send(b"\xc1")
            codes = []
            with pytest.raises(websockets.ConnectionClosed) as info:
                while True:
                    codes.append((await receive(bad))["code"])
            assert codes == ["bad_msgpack"] * 6 and info.value.rcvd.code == CloseCode.POLICY
            await good.send(frame(1))
            assert (await receive(good))["type"] == "result"
            await good.close()

        asyncio.run(scenario())


def test_a_client_that_never_reads_does_not_slow_others(server):
    async def scenario():
        # A reader that stops reading: its socket buffers fill, then its bounded outbox drops the oldest.
        stalled = await websockets.connect(server.ws, max_queue=1, max_size=None)
        steady = await connect(server)
        started = time.monotonic()
        for seq in range(300):
            await stalled.send(frame(seq))
        for seq in range(5):
            await steady.send(frame(seq))
            assert (await receive(steady))["seq"] == seq
        elapsed = time.monotonic() - started
        await steady.close()
        stalled.transport.abort()
        return elapsed

    assert asyncio.run(scenario()) < 60


def test_label_file_limits(settings, label_dir):
    path = label_dir / "image.txt"
    path.write_text("cat\ndog\n")  # the shipped files are over these limits
    (label_dir / "audio.txt").write_text("speech\nmusic\n")
    with live_server(replace(settings, max_labels=3, max_label_file_bytes=200)) as server:

        async def scenario():
            ws = await connect(server)
            path.write_text("a\nb\nc\nd\n")
            error = await receive_until(ws, lambda m: m["type"] == "labels_error")
            assert "over the limit of 3" in error["message"]
            path.write_text("x" * 300)
            error = await receive_until(ws, lambda m: m["type"] == "labels_error" and "200" in m["message"])
            assert "over the limit of 200" in error["message"]
            assert server.app.state.runtime.label_sources["image"].current.names == ("cat", "dog")
            await ws.close()

        asyncio.run(scenario())


# --- faults -----------------------------------------------------------------------------------------


def test_a_thousand_disconnects_mid_inference_leak_nothing(server):
    runtime = server.app.state.runtime

    async def count_tasks() -> int:
        return len(asyncio.all_tasks())

    def tasks_now() -> int:
        return asyncio.run_coroutine_threadsafe(count_tasks(), runtime.loop).result(5)

    baseline = tasks_now()

    async def scenario():
        payload = frame(0)
        for _ in range(1000):
            ws = await websockets.connect(server.ws)
            await ws.recv()
            await ws.send(payload)
            ws.transport.abort()

    asyncio.run(scenario())
    with contextlib.suppress(TimeoutError):
        wait_until(lambda: not (len(runtime.sessions) or runtime.pending() or tasks_now() > baseline), timeout=20)
    assert not runtime.sessions
    assert runtime.pending() == 0
    assert all(len(worker.queue) == 0 for worker in runtime.workers.values())
    assert tasks_now() <= baseline


def test_metrics_count_what_happens(server):
    async def scenario():
        ws = await connect(server)
        await ws.send(frame(1))
        await receive(ws)
        await ws.send(b"\xc1")
        await receive(ws)
        await ws.close()

    asyncio.run(scenario())
    text = httpx.get(f"{server.http}/metrics").text
    assert 'sensorium_inputs_total{modality="image"} 1.0' in text
    assert 'sensorium_results_total{modality="image"} 1.0' in text
    assert 'sensorium_errors_total{code="bad_msgpack"} 1.0' in text
    assert 'sensorium_stage_seconds_count{modality="image",stage="encode"} 1.0' in text
    assert 'sensorium_batch_size_count{modality="image"}' in text
    assert "sensorium_connections" in text and 'sensorium_queue_depth{modality="audio"} 0.0' in text


def test_sigterm_drains_sends_results_and_closes_with_1001(label_dir, tmp_path):
    from server.devmodels import write_open_clip

    # A full-size ViT-B-32 (random weights) takes long enough that the frame is inside the model at SIGTERM.
    model = write_open_clip(tmp_path / "b32", "ViT-B-32")
    port = free_port()
    command = [
        sys.executable, "-m", "server", "--port", str(port), "--image-model", f"local-dir:{model}", "--no-audio",
        "--image-labels", str(label_dir / "image.txt"), "--label-cache", "",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: healthy(port), timeout=120, what="the server to load ViT-B-32")

        async def scenario():
            ws = await websockets.connect(f"ws://127.0.0.1:{port}/ws")
            await ws.recv()
            await ws.send(frame(1))
            # Signal once the server holds the frame (counted on arrival), whatever the model's speed.
            await async_wait_until(lambda: inputs_received(port) >= 1, what="the frame to arrive")
            process.send_signal(signal.SIGTERM)
            messages = []
            with pytest.raises(websockets.ConnectionClosed) as info:
                while True:
                    messages.append(await receive(ws, timeout=20))
            return messages, info.value.rcvd

        messages, close = asyncio.run(scenario())
        assert [m["type"] for m in messages] == ["result"] and messages[0]["seq"] == 1
        assert close is not None and close.code == CloseCode.GOING_AWAY
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()


def healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()["status"] == "ok"
    except httpx.TransportError:
        return False


def inputs_received(port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("sensorium_inputs_total"))


def test_model_failure_on_one_input_fails_only_that_input(image_model, label_dir):
    """Fault injection at the model's boundary: a real model whose preprocessing raises for one input."""
    import numpy as np

    from server.encoders import ModelSpec, build_encoder
    from server.inference import LocalEmbedder
    from server.labelsets import EmbeddingCache, LabelSource
    from server.worker import FutureSink, Job, ModelWorker, StreamKey

    encoder = build_encoder(ModelSpec("image", image_model))
    real_prepare = encoder.prepare

    def prepare(inputs):
        if any(image.shape[0] == 13 for image in inputs):
            raise RuntimeError("injected failure")
        return real_prepare(inputs)

    encoder.prepare = prepare  # type: ignore[method-assign]
    source = LabelSource("image", label_dir / "image.txt", encoder, EmbeddingCache(), lambda m: None, 0)
    source.load_now()

    async def scenario():
        worker = ModelWorker(LocalEmbedder(encoder), source, encoder.scoring, max_batch=8)
        sinks, images = [], [np.zeros((48, 64, 3), np.uint8), np.zeros((13, 64, 3), np.uint8)] * 2
        for n, image in enumerate(images):
            sink = FutureSink()
            sinks.append(sink)
            worker.submit(Job(StreamKey(n, "image", "s"), image, n, 0.0, 0.0, 0.0, sink))
        task = asyncio.create_task(worker.run())
        outcomes = await asyncio.gather(*(sink.future for sink in sinks))
        task.cancel()
        worker.close()
        return outcomes

    outcomes = asyncio.run(scenario())
    assert [o.scores is not None for o in outcomes] == [True, False, True, False]
    assert all("model failed" in o.error for o in outcomes if o.scores is None)


def test_pack_helper_is_msgpack():
    assert pack({"a": 1}) == b"\x81\xa1a\x01"
