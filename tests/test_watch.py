"""Watching, events and silence on a live server, with real WebSocket clients."""

from __future__ import annotations

import asyncio
import dataclasses
import io

import httpx
import numpy as np
import pytest
import websockets
from PIL import Image

from .helpers import EAGER_EVENTS as EAGER
from .helpers import REPO, audio, frame, live_server, pack, receive, receive_until, tone

SAMPLES = REPO / "samples"


@pytest.fixture(scope="module")
def pictures() -> list[bytes]:
    return [(SAMPLES / name).read_bytes() for name in ("cat.jpg", "rocket.jpg")]


async def connect(server, query: str = "") -> websockets.ClientConnection:
    """A connection whose welcome is at the front of its messages."""
    return await websockets.connect(server.ws + query, max_size=None)


async def collect(ws, until, timeout: float = 20.0) -> list[dict]:
    """Messages until one satisfies ``until`` (included)."""
    out: list[dict] = []
    while True:
        out.append(await receive(ws, timeout))
        if until(out[-1]):
            return out


def test_a_watcher_sees_other_connections_streams_results_and_thumbnails(server, pictures):
    async def scenario():
        watcher, streamer = await connect(server), await connect(server)
        watcher_welcome, streamer_welcome = await receive(watcher), await receive(streamer)
        await watcher.send(pack({"type": "watch", "streams": "*"}))
        first = await receive_until(watcher, lambda m: m["type"] == "streams")
        await streamer.send(frame(1, pictures[0], stream="porch"))
        seen = await collect(watcher, lambda m: m["type"] == "result")
        own = await receive_until(streamer, lambda m: m["type"] == "result")
        await streamer.close()
        gone = await receive_until(watcher, lambda m: m["type"] == "streams" and not m["streams"])
        await watcher.close()
        return watcher_welcome, streamer_welcome, first, seen, own, gone

    watcher_welcome, streamer_welcome, first, seen, own, gone = asyncio.run(scenario())
    me, them = watcher_welcome["client"], streamer_welcome["client"]
    assert me != them and first["streams"] == []
    listing = next(m for m in seen if m["type"] == "streams")
    assert [(s["client"], s["modality"], s["stream"]) for s in listing["streams"]] == [(them, "image", "porch")]
    thumbnail = next(m for m in seen if m["type"] == "thumbnail")
    assert (thumbnail["client"], thumbnail["stream"], thumbnail["watched"]) == (them, "porch", True)
    picture = Image.open(io.BytesIO(thumbnail["data"]))
    assert picture.format == "JPEG" and picture.size == (thumbnail["width"], thumbnail["height"])
    result = seen[-1]
    assert (result["client"], result["watched"], result["stream"], result["seq"]) == (them, True, "porch", 1)
    assert result["top"] == own["top"] and "watched" not in own
    assert {"label", "score", "similarity", "group"} <= set(result["top"][0])
    assert gone["streams"] == []


def test_a_watch_by_name_gets_only_those_streams(server, pictures):
    async def scenario():
        watcher, streamer = await connect(server), await connect(server)
        await receive(watcher)
        await receive(streamer)
        await watcher.send(pack({"type": "watch", "streams": ["door"]}))
        await streamer.send(frame(1, pictures[0], stream="porch"))
        await streamer.send(frame(2, pictures[0], stream="door"))
        seen = await collect(watcher, lambda m: m["type"] == "result")
        await streamer.close()
        await watcher.close()
        return seen

    seen = asyncio.run(scenario())
    assert [m["stream"] for m in seen if m["type"] in {"result", "thumbnail"}] == ["door", "door"]


def test_a_watch_with_a_wrong_token_is_refused_like_the_socket(settings, pictures):
    with live_server(dataclasses.replace(settings, token="s3cret")) as server:

        async def scenario():
            ws = await connect(server, "?token=s3cret")
            await receive(ws)
            await ws.send(pack({"type": "watch", "token": "wrong"}))
            error = await receive(ws)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await receive(ws)
            return error, closed.value.rcvd

        error, close = asyncio.run(scenario())
    assert error["code"] == "unauthorized"
    assert close is not None and close.code == 4401


def test_events_start_when_the_scene_changes_and_end_with_the_stream(settings, pictures):
    with live_server(dataclasses.replace(settings, **EAGER)) as server:

        async def scenario():
            streamer, watcher = await connect(server), await connect(server)
            await receive(streamer)
            await receive(watcher)
            await watcher.send(pack({"type": "watch"}))
            messages: list[dict] = []
            for seq in range(1, 31):  # a steady scene for the baseline, then another one
                await streamer.send(frame(seq, pictures[0 if seq <= 20 else 1], stream="yard"))
                messages += await collect(streamer, lambda m, seq=seq: m["type"] == "result" and m["seq"] == seq)
            await streamer.send(pack({"type": "end", "modality": "image", "stream": "yard"}))
            messages += await collect(streamer, lambda m: m["type"] == "ended")
            listed: list[bool] = []  # whether each ``streams`` message listed a stream

            def yard_gone(message: dict) -> bool:
                if message["type"] == "streams":
                    listed.append(bool(message["streams"]))
                return any(listed) and not listed[-1]

            watched = await collect(watcher, yard_gone)
            await streamer.close()
            await watcher.close()
            return messages, watched

        messages, watched = asyncio.run(scenario())
        metrics = httpx.get(server.http + "/metrics").text
    events = [m for m in messages if m["type"] == "event"]
    starts = [e for e in events if e["state"] == "start"]
    assert starts, "a new scene starts events"
    assert all(e["seq"] > 20 for e in starts), "no event while the scene is steady"
    open_labels = {e["label"] for e in starts} - {e["label"] for e in events if e["state"] == "end"}
    assert not open_labels, "the stream's end ends every open event"
    assert all(e["duration_s"] >= 0 for e in events if e["state"] == "end")
    assert {"modality", "stream", "client", "label", "group", "state", "score", "seq", "ts", "time"} <= set(starts[0])
    copies = [m for m in watched if m["type"] == "event"]
    assert [(e["label"], e["state"]) for e in copies] == [(e["label"], e["state"]) for e in events]
    assert all(e["watched"] for e in copies)
    assert f'sensorium_events_total{{modality="image",state="start"}} {float(len(starts))}' in metrics


def test_silent_audio_windows_skip_the_model_and_are_still_answered(server):
    rate = 16000

    async def scenario():
        ws = await connect(server)
        welcome = await receive(ws)
        hop = welcome["limits"]["audio_hop_seconds"]
        chunks = [np.zeros(int(hop * rate), np.float32)] * 3 + [tone(440, hop, rate)]
        for seq, samples in enumerate(chunks, start=1):
            await ws.send(audio(seq, samples, rate=rate))
        results = [await receive_until(ws, lambda m: m["type"] == "result") for _ in chunks]
        await ws.close()
        return results

    results = asyncio.run(scenario())
    assert [r.get("silent", False) for r in results] == [True, True, True, False]
    assert [r["seq"] for r in results] == [1, 2, 3, 4]
    assert results[0]["top"] == [] and results[3]["top"]
    assert "encode_ms" not in results[0]["timings"]
