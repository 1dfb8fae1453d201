"""``config {embeddings: true}``: each result carries its input's unit embedding, against a live server."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import httpx
import numpy as np
import websockets
from PIL import Image

from clients.client import SensoriumClient
from clients.messages import Result

from .helpers import audio, connect, pack, receive, receive_until, tone

COLORS = [(200, 30, 30), (20, 160, 40), (30, 40, 220), (240, 240, 240)]


def picture(color: tuple[int, int, int], index: int) -> bytes:
    """A picture with some structure, different for each index, so the embeddings differ."""
    pixels = np.zeros((96, 128, 3), np.uint8)
    pixels[:] = color
    pixels[16 * index : 16 * index + 40, 10 + 20 * index : 60 + 20 * index] = (255 - np.array(color)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


async def stream_with_client(url: str, pictures: list[bytes], **options: Any) -> list[Result]:
    """Each picture in turn through the Python client, waiting for its result: nothing is dropped."""
    results: list[Result] = []
    async with SensoriumClient(url, on_status=lambda _: None, **options) as client:
        messages = client.events()
        for seq, data in enumerate(pictures):
            assert await client.send_frame(data, seq, fmt="png")
            async for message in messages:
                if isinstance(message, Result):
                    results.append(message)
                    break
                assert not isinstance(message, dict) or message.get("type") != "error", message
    return results


def test_results_carry_the_unit_embedding_the_http_api_gives_for_the_same_frame(server):
    pictures = [picture(color, i) for i, color in enumerate(COLORS)]
    results = asyncio.run(stream_with_client(server.ws, pictures, embeddings=True))
    assert [r.seq for r in results] == list(range(len(pictures)))
    for result, data in zip(results, pictures, strict=True):
        embedding = result.embedding
        assert embedding is not None and embedding.dtype == np.float32
        reply = httpx.post(f"{server.http}/v1/embed/image", content=data, headers={"content-type": "image/png"})
        assert reply.status_code == 200, reply.text
        expected = np.array(reply.json()["embeddings"][0], dtype=np.float64)
        assert embedding.shape == (reply.json()["dim"],) == expected.shape
        assert abs(np.linalg.norm(embedding) - 1) < 1e-5
        assert float(embedding @ expected) / np.linalg.norm(expected) >= 0.9999
    # Different pictures, different embeddings: the field is the input's own, not a constant.
    assert float(results[0].embedding @ results[2].embedding) < 0.9999  # type: ignore[operator]


def test_without_the_option_results_carry_no_embedding(server):
    results = asyncio.run(stream_with_client(server.ws, [picture(COLORS[0], 0)]))
    assert results[0].embedding is None and results[0].top


def test_the_option_is_per_connection_and_watchers_get_copies_without_it(server):
    async def scenario() -> tuple[dict, dict, dict]:
        asking = await connect(server)
        plain = await connect(server)
        watcher = await connect(server)
        await watcher.send(pack({"type": "watch"}))
        await receive_until(watcher, lambda m: m["type"] == "streams")
        await asking.send(pack({"type": "config", "embeddings": True}))
        data = picture(COLORS[1], 1)
        await asking.send(pack({"type": "frame", "seq": 1, "ts": 0.0, "format": "png", "data": data}))
        own = await receive_until(asking, lambda m: m["type"] == "result")
        copy = await receive_until(watcher, lambda m: m["type"] == "result")
        await plain.send(pack({"type": "frame", "seq": 1, "ts": 0.0, "format": "png", "data": data}))
        other = await receive_until(plain, lambda m: m["type"] == "result")
        for ws in (asking, plain, watcher):
            await ws.close()
        return own, copy, other

    own, copy, other = asyncio.run(scenario())
    assert isinstance(own["embedding"], bytes) and own["embedding_dim"] == len(own["embedding"]) // 4 > 0
    assert copy["watched"] and "embedding" not in copy and "embedding_dim" not in copy
    assert "embedding" not in other


def test_a_connection_turns_embeddings_off_again(server):
    async def scenario() -> list[dict]:
        ws = await connect(server)
        got = []
        for seq, asked in enumerate((True, False)):
            await ws.send(pack({"type": "config", "embeddings": asked}))
            await ws.send(
                pack({"type": "frame", "seq": seq, "ts": 0.0, "format": "png", "data": picture(COLORS[2], 2)})
            )
            got.append(await receive_until(ws, lambda m: m["type"] == "result"))
        await ws.close()
        return got

    on, off = asyncio.run(scenario())
    assert "embedding" in on and "embedding" not in off


def test_a_bad_value_is_refused_by_name_and_the_connection_stays(server):
    async def scenario() -> tuple[dict, dict]:
        ws = await connect(server)
        await ws.send(pack({"type": "config", "embeddings": "yes"}))
        error = await receive(ws)
        await ws.send(pack({"type": "frame", "seq": 5, "ts": 0.0, "format": "png", "data": picture(COLORS[0], 0)}))
        result = await receive_until(ws, lambda m: m["type"] == "result")
        await ws.close()
        return error, result

    error, result = asyncio.run(scenario())
    assert (error["type"], error["code"]) == ("error", "bad_field")
    assert "'embeddings'" in error["message"] and "true or false" in error["message"]
    assert "embedding" not in result  # the refused config changed nothing


def test_audio_results_carry_embeddings_and_silent_windows_none(server):
    rate = 16000

    async def scenario() -> list[dict]:
        ws: websockets.ClientConnection = await websockets.connect(server.ws, max_size=None)
        welcome = await receive(ws)
        hop = welcome["limits"]["audio_hop_seconds"]
        await ws.send(pack({"type": "config", "embeddings": True}))
        chunks = [np.zeros(int(hop * rate), np.float32), tone(440, hop, rate)]
        for seq, samples in enumerate(chunks, start=1):
            await ws.send(audio(seq, samples, rate=rate))
        results = [await receive_until(ws, lambda m: m["type"] == "result") for _ in chunks]
        await ws.close()
        return results

    silent, sounding = asyncio.run(scenario())
    assert silent["silent"] and "embedding" not in silent
    vector = np.frombuffer(sounding["embedding"], dtype="<f4")
    assert vector.shape == (sounding["embedding_dim"],) and abs(np.linalg.norm(vector) - 1) < 1e-5
