"""The webcam and microphone clients against the real server with the small test models."""

from __future__ import annotations

import argparse
import asyncio
import builtins
import contextlib
import io
import re
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import msgpack
import numpy as np
import pytest
import soundfile
import websockets

from clients import client as client_lib
from clients import microphone, script, webcam
from clients.client import SensoriumClient
from clients.ledger import Ledger
from clients.messages import StreamInfo
from clients.terminal import LivePrinter

from .helpers import REPO, LiveServer, free_port, live_server, pack, tone

SENSORIUM = shutil.which("sensorium") or str(Path(sys.executable).parent / "sensorium")


def write_video(path: Path, frames: int, fps: float = 10) -> Path:
    """A short video written with OpenCV, read back by the client through the same capture code as a camera."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (160, 120))
    for i in range(frames):
        image = np.zeros((120, 160, 3), np.uint8)
        image[:, :, i % 3] = 40 + 200 * i // frames
        cv2.putText(image, str(i), (50, 80), cv2.FONT_HERSHEY_SIMPLEX, 2, (255, 255, 255), 3)
        writer.write(image)
    writer.release()
    return path


def summary_counts(text: str) -> dict[str, int]:
    match = re.search(r"(\w+) sent (\d+), results (\d+), dropped (\d+), errors (\d+), lost in reconnects (\d+)", text)
    assert match, text
    return dict(zip(("sent", "results", "dropped", "errors", "lost"), map(int, match.groups()[1:]), strict=True))


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SENSORIUM, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_webcam_streams_a_video_file_and_sums_up(server, tmp_path):
    video = write_video(tmp_path / "clip.mp4", frames=12)
    done = cli("webcam", "--source", str(video), "--headless", "--url", server.ws, "--top-k", "2", "--inflight", "3")
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("[image camera #")]
    counts = summary_counts(done.stdout)
    assert counts["sent"] == 12 and counts["errors"] == 0 and counts["lost"] == 0
    assert counts["results"] == len(lines) >= 1
    assert counts["results"] + counts["dropped"] == 12
    assert all(len(re.findall(r" \d\.\d\d", line)) == 2 for line in lines)  # two labels each
    assert "round trip p50" in done.stdout
    assert re.search(r"server stage medians \(ms\): decode [\d.]+, queue [\d.]+, preprocess", done.stdout)


def test_webcam_stops_after_frames_and_at_the_fps_cap(server):
    started = time.monotonic()
    done = cli("webcam", "--source", str(REPO / "samples" / "slideshow.mp4"), "--headless", "--url", server.ws,
               "--frames", "6", "--fps", "10")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert summary_counts(done.stdout)["sent"] == 6
    assert time.monotonic() - started >= 0.5  # six frames at 10 fps take at least half a second


def test_microphone_streams_a_wav_file(server, tmp_path):
    wav = tmp_path / "tone.wav"
    soundfile.write(wav, np.stack([tone(660, 3.5, 22050), tone(660, 3.5, 22050)], axis=1), 22050, subtype="PCM_16")
    done = cli("mic", "--file", str(wav), "--fast", "--url", server.ws, "--top-k", "3")
    assert done.returncode == 0, done.stderr
    counts = summary_counts(done.stdout)
    assert counts["sent"] == 18  # 3.5 s in 200 ms chunks
    # --fast keeps at most about one window ahead, so on a busy machine a window can be dropped
    assert counts["results"] >= 1 and counts["results"] + counts["dropped"] >= 2 and counts["errors"] == 0
    results = [line for line in done.stdout.splitlines() if line.startswith("[audio mic #")]
    assert len(results) == counts["results"]
    assert "audio sent 3.5 s" in done.stdout


def test_microphone_real_time_pacing(server):
    started = time.monotonic()
    done = cli("mic", "--file", str(REPO / "samples" / "tone_1khz.wav"), "--url", server.ws)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started >= 1.8  # a 2-second file streamed in real time
    assert summary_counts(done.stdout)["results"] >= 1


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["webcam", "--source", "7", "--headless"], 2, "no camera at index 7"),
        (["webcam", "--source", "missing.mp4", "--headless"], 2, "video file not found"),
        (["webcam", "--source", "README.md", "--headless"], 2, "cannot read video file"),
        (["mic", "--file", "missing.wav"], 2, "cannot read sound file"),
        (["mic", "--file", "README.md"], 2, "cannot read sound file"),
    ],
)
def test_clear_messages_for_bad_sources(args, code, fragment):
    done = cli(*args, "--url", f"ws://127.0.0.1:{free_port()}/ws", "--connect-timeout", "1")
    assert done.returncode == code, done.stderr
    assert fragment in done.stderr and "Traceback" not in done.stderr


def test_clear_message_when_the_server_is_unreachable():
    done = cli("mic", "--file", str(REPO / "samples" / "tone_1khz.wav"), "--url",
               f"ws://127.0.0.1:{free_port()}/ws", "--connect-timeout", "1")  # fmt: skip
    assert done.returncode == 3
    assert "cannot reach the server" in done.stderr and "sensorium serve" in done.stderr


def test_portaudio_missing_names_the_system_package(monkeypatch):
    real_import = builtins.__import__

    def without_portaudio(name, *args, **kwargs):
        if name == "sounddevice":
            raise OSError("PortAudio library not found")  # what sounddevice raises when libportaudio is absent
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_portaudio)
    with pytest.raises(microphone.AudioSourceError, match="libportaudio2"):
        microphone.import_sounddevice()


def test_webcam_client_rides_out_a_server_restart(settings, tmp_path):
    port = free_port()
    video = write_video(tmp_path / "long.mp4", frames=80)
    args = argparse.Namespace(
        source=str(video), url=f"ws://127.0.0.1:{port}/ws", stream="camera", quality=80, max_side=640, inflight=2,
        fps=10.0, top_k=None, min_score=None, headless=True, duration=0, frames=0, connect_timeout=5, events=False,
    )  # fmt: skip
    first = LiveServer(settings, port=port)
    first.start()
    out = io.StringIO()
    client = SensoriumClient(args.url, connect_timeout=5, on_status=LivePrinter(out, live=False).status)

    async def scenario():
        streaming = asyncio.create_task(webcam.stream_video(args, client, LivePrinter(out, live=False)))
        while client.ledger.results < 5:
            await asyncio.sleep(0.05)
        await asyncio.to_thread(first.stop)
        await asyncio.sleep(0.5)
        second = LiveServer(settings, port=port)
        await asyncio.to_thread(second.start)
        results_before = client.ledger.results
        await streaming
        second.stop()
        return results_before

    results_before = asyncio.run(scenario())
    ledger: Ledger = client.ledger
    assert ledger.reconnects == 1 and ledger.gap_s > 0.5
    assert ledger.results > results_before  # it carried on after the restart
    assert ledger.sent == ledger.results + ledger.dropped + ledger.errors + ledger.lost
    assert "reconnects 1, disconnected for" in ledger.summary("frames")
    assert "connection to" in out.getvalue() and "reconnected" in out.getvalue()


# --- the sounddevice path, through PortAudio, from a PulseAudio null sink's monitor -------------


@pytest.fixture
def virtual_microphone(tmp_path):
    """A PulseAudio null sink whose monitor is the default input; yields a function that plays into it."""
    if shutil.which("pulseaudio") is None or shutil.which("pactl") is None:
        pytest.skip("PulseAudio is not installed (.ci/run installs it)")
    if subprocess.run(["pactl", "info"], capture_output=True).returncode != 0:
        subprocess.run(["pulseaudio", "--daemonize", "--exit-idle-time=-1"], capture_output=True, check=True)
        for _ in range(50):
            if subprocess.run(["pactl", "info"], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
    sink = f"sensorium_test_{free_port()}"
    module = subprocess.run(
        ["pactl", "load-module", "module-null-sink", f"sink_name={sink}"], capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run(["pactl", "set-default-source", f"{sink}.monitor"], check=True)
    players: list[subprocess.Popen[bytes]] = []

    def play(samples: np.ndarray, rate: int) -> None:
        path = tmp_path / f"play{len(players)}.wav"
        soundfile.write(path, samples, rate, subtype="PCM_16")
        players.append(subprocess.Popen(["paplay", "-d", sink, str(path)]))

    yield play
    for player in players:
        player.kill()
    subprocess.run(["pactl", "unload-module", module], capture_output=True)


def test_microphone_capture_from_a_virtual_input_device(virtual_microphone):
    virtual_microphone(tone(1000, 12, 44100), 44100)

    async def capture() -> tuple[int, np.ndarray]:
        chunks = []
        async for chunk in microphone.device_chunks(None, 200):
            chunks.append(np.frombuffer(chunk.pcm, "<i2"))
            rate = chunk.sample_rate
            if len(chunks) == 12:
                return rate, np.concatenate(chunks[4:])
        raise AssertionError("the device stopped")

    rate, samples = asyncio.run(capture())
    assert np.abs(samples).max() > 3000  # the tone, not silence
    peak = np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(np.abs(np.fft.rfft(samples)))]
    assert abs(peak - 1000) < 5


def test_mic_client_streams_the_virtual_input_to_the_server(server, virtual_microphone):
    virtual_microphone(tone(440, 15, 44100), 44100)
    done = cli("mic", "--duration", "5", "--url", server.ws, "--chunk-ms", "100")
    assert done.returncode == 0, done.stderr
    counts = summary_counts(done.stdout)
    assert counts["sent"] >= 10 and counts["results"] >= 1 and counts["errors"] == 0


# --- telling the user what is going on, and when to stop --------------------------------------------


def test_an_unreachable_server_is_reported_at_once_and_given_up_on_time():
    url = f"ws://127.0.0.1:{free_port()}/ws"  # nobody listens there
    started = time.monotonic()
    process = subprocess.Popen(  # `sensorium mic` without the server package's start-up
        [sys.executable, "-m", "clients.microphone", "--file", str(REPO / "samples" / "tone_1khz.wav"), "--url", url,
         "--connect-timeout", "3"],
        cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stderr is not None
    first = process.stderr.readline()
    first_after = time.monotonic() - started
    _, rest = process.communicate(timeout=30)
    finished_after = time.monotonic() - started
    assert f"connecting to {url} (giving up after 3 s)" in first
    assert first_after < 2, f"the first line took {first_after:.1f} s"
    assert len(re.findall(r"no connection \(.+\); retrying in [\d.]+ s", rest)) >= 2  # a line per retry
    assert process.returncode == 3
    assert "cannot reach the server" in rest and "sensorium serve" in rest and "Traceback" not in rest
    assert finished_after < 3 + 2.5  # it gives up at the timeout, not one long backoff later


@pytest.mark.parametrize("script", [webcam, microphone])
def test_help_shows_the_connect_timeout(script, capsys, monkeypatch):
    # `sensorium webcam` and `sensorium mic` build their parsers with the same add_arguments as these mains
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit):
        script.main(["--help"])
    assert re.search(r"--connect-timeout SECONDS\s+give up if the first connection takes longer \(default 10\)",
                     capsys.readouterr().out)  # fmt: skip


def test_a_server_that_requires_a_token_stops_the_client_at_once(settings):
    async def refused(url: str) -> tuple[Exception, float, list[str]]:
        statuses: list[str] = []
        client = SensoriumClient(url, connect_timeout=5, on_status=statuses.append)
        started = time.monotonic()
        with pytest.raises(client_lib.ServerRefused) as caught:
            await client.start()
        return caught.value, time.monotonic() - started, statuses

    async def accepted(url: str) -> None:
        async with SensoriumClient(url, connect_timeout=5) as client:
            assert client.welcome["type"] == "welcome"

    with live_server(replace(settings, token="abc")) as server:
        error, took, statuses = asyncio.run(refused(server.ws))
        assert error.code == 4401 and "requires a token" in str(error) and "?token=" in str(error)
        assert took < 2.5 and not any("retrying" in line for line in statuses)  # no reconnect attempts
        error, _, _ = asyncio.run(refused(f"{server.ws}?token=wrong"))
        assert "refused the token" in str(error)
        asyncio.run(accepted(f"{server.ws}?token=abc"))
        done = cli("mic", "--file", str(REPO / "samples" / "tone_1khz.wav"), "--url", server.ws,
                   "--connect-timeout", "5")  # fmt: skip
    assert done.returncode == 4, done.stderr
    assert "requires a token: pass ?token=" in done.stderr and "--url" in done.stderr
    assert "sensorium serve` running" not in done.stderr and "Traceback" not in done.stderr


# A scripted stand-in for the server, for what a client must do whatever the server's timing.

WELCOME = {"type": "welcome", "protocol": 1, "server": "fake", "modalities": {},
           "limits": {"audio_hop_seconds": 1.0, "audio_window_seconds": 5.0}}  # fmt: skip
Handler = Callable[[Any], Awaitable[None]]


@contextlib.asynccontextmanager
async def fake_server(handler: Handler) -> AsyncIterator[str]:
    async with websockets.serve(handler, "127.0.0.1", 0) as served:
        port = next(iter(served.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/ws"


def fake_result(modality: str, stream: str, seq: int, dropped: int = 0) -> bytes:
    return pack({"type": "result", "modality": modality, "stream": stream, "seq": seq, "ts": 0.0,
                 "labels_version": 1, "top": [{"label": "x", "score": 1.0, "similarity": 0.3}],
                 "timings": {"total_ms": 1.0}, "dropped": dropped})  # fmt: skip


async def messages(ws: Any) -> AsyncIterator[dict[str, Any]]:
    with contextlib.suppress(websockets.ConnectionClosed):
        async for raw in ws:
            yield msgpack.unpackb(raw)


def test_a_refusal_when_reconnecting_stops_the_client():
    connections = 0

    async def handler(ws: Any) -> None:
        nonlocal connections
        connections += 1
        if connections == 1:
            await ws.send(pack(WELCOME))
            await ws.close(1012, "restarting")
        else:  # came back with a policy this client cannot meet
            await ws.close(4403, "origin https://elsewhere.example is not allowed")

    async def scenario() -> tuple[SensoriumClient, list[dict[str, Any]]]:
        async with fake_server(handler) as url:
            client = SensoriumClient(url, connect_timeout=5, on_status=lambda _: None)
            await client.start()
            with pytest.raises(client_lib.ServerRefused, match="origin"):
                await client.wait_for_slot("image", "camera", 1, timeout=10)
            with pytest.raises(client_lib.ServerRefused):
                await client.send_frame(b"x", 0)
            events = [event async for event in client.events()]  # ends: the client has stopped
            assert client._task is not None and client._task.done()
            await client.close()
            return client, events

    client, events = asyncio.run(scenario())
    assert connections == 2 and client.failure is not None and client.failure.code == 4403
    assert events == []


def test_webcam_ends_its_stream_and_the_server_settles_the_books(tmp_path):
    video = write_video(tmp_path / "clip.mp4", frames=6)
    received: list[tuple[str, int | None]] = []

    async def handler(ws: Any) -> None:
        await ws.send(pack(WELCOME))
        async for message in messages(ws):
            received.append((message["type"], message.get("seq")))
            if message["type"] == "frame" and message["seq"] < 5:
                await ws.send(fake_result("image", message["stream"], message["seq"]))
            elif message["type"] == "end":  # frame 5's result was lost (say, to a full send queue)
                await ws.send(pack({"type": "ended", "modality": "image", "stream": message["stream"]}))

    async def scenario() -> tuple[SensoriumClient, float]:
        async with fake_server(handler) as url:
            args = argparse.Namespace(
                source=str(video), url=url, stream="camera", quality=80, max_side=640, inflight=6, fps=0.0,
                top_k=None, min_score=None, headless=True, duration=0, frames=0, connect_timeout=5, events=False,
            )  # fmt: skip
            client = SensoriumClient(url, on_status=lambda _: None)
            started = time.monotonic()
            await webcam.stream_video(args, client, LivePrinter(io.StringIO(), live=False))
            return client, time.monotonic() - started

    client, took = asyncio.run(scenario())
    assert received[-1] == ("end", 5) and received[:-1] == [("frame", seq) for seq in range(6)]
    ledger = client.ledger
    assert (ledger.sent, ledger.results, ledger.dropped) == (6, 5, 1)  # the lost frame is counted, not owed
    assert ledger.in_flight("image", "camera") == 0 and ledger.has_ended("image", "camera")
    assert took < script.END_WAIT_S  # it did not sit out the timeout


def test_mic_file_ends_its_stream_and_waits_for_the_tail(tmp_path, capsys):
    wav = tmp_path / "tone.wav"
    soundfile.write(wav, tone(440, 3.5, 16000), 16000, subtype="PCM_16")
    received: list[tuple[str, int | None]] = []

    async def handler(ws: Any) -> None:
        await ws.send(pack(WELCOME))
        seconds = 0.0
        async for message in messages(ws):
            received.append((message["type"], message.get("seq")))
            if message["type"] == "audio":
                before = seconds
                seconds += len(message["data"]) / 2 / message["sample_rate"]
                if int(seconds + 1e-9) > int(before + 1e-9):  # a full hop
                    await ws.send(fake_result("audio", message["stream"], message["seq"]))
            elif message["type"] == "end":
                await asyncio.sleep(0.3)  # the model takes its time over the partial hop
                await ws.send(fake_result("audio", message["stream"], message["seq"]))
                await ws.send(pack({"type": "ended", "modality": "audio", "stream": message["stream"]}))

    async def scenario() -> SensoriumClient:
        async with fake_server(handler) as url:
            args = argparse.Namespace(
                file=str(wav), fast=True, device=None, chunk_ms=200, stream="mic", url=url, top_k=None,
                min_score=None, duration=0, connect_timeout=5, events=False,
            )  # fmt: skip
            client = SensoriumClient(url, on_status=lambda _: None)
            await microphone.stream_audio(args, client, LivePrinter(io.StringIO(), live=False))
            return client

    client = asyncio.run(scenario())
    # the end names the last chunk, whose seq the server gives the tail's result
    assert received[-1] == ("end", 17) and received[:-1] == [("audio", seq) for seq in range(18)]
    assert client.ledger.results == 4  # 3 full hops and the tail
    assert "audio sent 3.5 s" in capsys.readouterr().out


def test_a_server_that_does_not_know_end_is_not_waited_for():
    async def handler(ws: Any) -> None:
        await ws.send(pack(WELCOME))
        async for message in messages(ws):
            if message["type"] == "end":  # what a server from before ``end`` answers
                await ws.send(pack({"type": "error", "code": "unknown_type", "message": "unknown message type 'end'",
                                    "seq": message["seq"]}))  # fmt: skip

    async def scenario() -> tuple[bool, float]:
        async with fake_server(handler) as url, SensoriumClient(url, on_status=lambda _: None) as client:
            assert await client.send_audio(bytes(3200), 7, 16000)
            assert await client.end_stream("audio", "mic")
            started = time.monotonic()
            ended = await client.wait_ended("audio", "mic", timeout=script.END_WAIT_S)
            return ended, time.monotonic() - started

    ended, took = asyncio.run(scenario())
    assert not ended and took < script.END_WAIT_S / 2


@pytest.mark.parametrize(("seconds", "hops"), [(3.5, 4), (3.0, 3)])
def test_mic_file_tail_is_classified(server, tmp_path, seconds, hops):
    """Hop 1 s, window 5 s: a 3.5 s file gets 3 full hops and the final partial one; a 3.0 s file just 3."""
    wav = tmp_path / "tone.wav"
    soundfile.write(wav, tone(660, seconds, 22050), 22050, subtype="PCM_16")
    started = time.monotonic()
    done = cli("mic", "--file", str(wav), "--fast", "--url", server.ws)
    assert done.returncode == 0, done.stderr
    counts = summary_counts(done.stdout)
    chunks = round(seconds / 0.2)
    assert counts["sent"] == chunks and counts["errors"] == 0
    # --fast can replace a waiting window by a newer one (dropped); the last one, the tail, always comes.
    assert counts["results"] + counts["dropped"] == hops, done.stdout
    results = re.findall(r"^\[audio mic #(\d+)\]", done.stdout, re.MULTILINE)
    assert int(results[-1]) == chunks - 1  # the last window holds the last chunk
    assert time.monotonic() - started < script.END_WAIT_S  # the server said ``ended``; no timeout


# --- events, silence and watching ------------------------------------------------------------------


def fake_event(stream: str, seq: int, state: str, label: str | None = "cat", **extra: Any) -> bytes:
    message = {"type": "event", "modality": "image", "stream": stream, "client": 1, "label": label, "group": None,
               "state": state, "score": 4.5, "seq": seq, "ts": 0.0, "time": time.time()}  # fmt: skip
    if state == "end":
        message["duration_s"] = 1.5
    return pack({**message, **extra})


def test_the_client_types_events_and_watched_copies_and_keeps_copies_off_the_books():
    watches: list[tuple[int, dict[str, Any]]] = []
    connections = 0

    async def handler(ws: Any) -> None:
        nonlocal connections
        connections += 1
        connection = connections
        await ws.send(pack({**WELCOME, "client": connection}))
        async for message in messages(ws):
            if message["type"] == "watch":
                watches.append((connection, message))
                door = {"client": 2, "modality": "image", "stream": "door", "labels_version": 1, "since": 5.0}
                await ws.send(pack({"type": "streams", "streams": [door]}))
                await ws.send(pack({**msgpack.unpackb(fake_result("image", "door", 41)), "client": 2, "watched": True}))
                await ws.send(fake_event("door", 41, "start", client=2, watched=True))
                await ws.send(pack({"type": "thumbnail", "client": 2, "modality": "image", "stream": "door",
                                    "seq": 41, "ts": 0.0, "format": "jpeg", "width": 160, "height": 120,
                                    "data": b"\xff\xd8"}))  # fmt: skip
            elif message["type"] == "frame":
                await ws.send(fake_result("image", "camera", message["seq"]))
                await ws.send(fake_event("camera", message["seq"], "start"))
                await ws.send(fake_event("camera", message["seq"], "end"))
                if connection == 1:
                    await ws.close(1012, "restarting")

    async def scenario() -> tuple[SensoriumClient, list[Any]]:
        got: list[Any] = []
        async with fake_server(handler) as url, SensoriumClient(url, on_status=lambda _: None) as client:
            assert client.client_id == 1
            assert await client.watch(token="t")
            assert await client.send_frame(b"jpeg", 0)
            async for message in client.events():
                got.append(message)
                if isinstance(message, client_lib.Event) and message.state == "end":
                    break
            await client.wait_until(lambda: len(watches) == 2, timeout=10)  # sent again on the new connection
            assert client.client_id == 2
        return client, got

    client, got = asyncio.run(scenario())
    assert [w for _, w in watches] == [{"type": "watch", "streams": "*", "token": "t"}] * 2
    kinds = [type(m).__name__ for m in got]
    assert kinds == ["Streams", "Result", "Event", "Thumbnail", "Result", "Event", "Event"], kinds
    streams, watched_result, watched_event, thumbnail = got[:4]
    assert streams.streams == (StreamInfo(2, "image", "door", 1, 5.0),)
    assert watched_result.watched and watched_result.client == 2 and watched_result.round_trip_ms is None
    assert watched_event.watched and watched_event.stream == "door"
    assert (thumbnail.client, thumbnail.width, thumbnail.data) == (2, 160, b"\xff\xd8")
    own_result, start, end = got[4:]
    assert not own_result.watched and own_result.round_trip_ms is not None
    assert (start.state, end.state, end.duration_s, start.watched) == ("start", "end", 1.5, False)
    ledger = client.ledger
    assert (ledger.sent, ledger.results, ledger.event_starts, ledger.event_ends) == (1, 1, 1, 1)
    assert ledger.events_by_label == {"cat": 1}


@pytest.mark.parametrize("events_only", [True, False])
def test_webcam_events_prints_events_and_no_results(tmp_path, events_only):
    video = write_video(tmp_path / "clip.mp4", frames=6)

    async def handler(ws: Any) -> None:
        await ws.send(pack(WELCOME))
        async for message in messages(ws):
            if message["type"] == "frame":
                await ws.send(fake_result("image", message["stream"], message["seq"]))
                if message["seq"] in (1, 4):
                    await ws.send(
                        fake_event(message["stream"], message["seq"], "start" if message["seq"] == 1 else "end")
                    )
            elif message["type"] == "end":
                await ws.send(pack({"type": "ended", "modality": "image", "stream": message["stream"]}))

    async def scenario() -> tuple[SensoriumClient, str]:
        out = io.StringIO()
        async with fake_server(handler) as url:
            args = argparse.Namespace(
                source=str(video), url=url, stream="camera", quality=80, max_side=640, inflight=6, fps=0.0,
                top_k=None, min_score=None, headless=True, duration=0, frames=0, connect_timeout=5,
                events=events_only,
            )  # fmt: skip
            client = SensoriumClient(url, on_status=lambda _: None)
            await webcam.stream_video(args, client, LivePrinter(out, live=False))
        return client, out.getvalue()

    client, out = asyncio.run(scenario())
    lines = out.splitlines()
    events = [
        line
        for line in lines
        if re.fullmatch(r"\d\d:\d\d:\d\d  image camera  cat  (start  z=4\.5|end after 1\.5 s)", line)
    ]
    assert len(events) == 2 and events[0].endswith("z=4.5")
    assert len(lines) == (2 if events_only else 8)  # with --events nothing but the events
    assert (client.ledger.results, client.ledger.event_starts, client.ledger.event_ends) == (6, 1, 1)


# Thresholds low enough that the small random models start and end events within seconds of input.
EAGER_EVENTS = {"event_start": 0.5, "event_end": 0.0, "event_min_seconds": 0.0, "event_hold_seconds": 0.0}
EVENT_LINE = r"\d\d:\d\d:\d\d  {source}  .+  (start  z=-?\d+\.\d|end after \d+\.\d s|end)"


def event_lines(text: str, source: str) -> list[str]:
    return [line for line in text.splitlines() if re.fullmatch(EVENT_LINE.format(source=source), line)]


def summary_events(text: str) -> tuple[int, int]:
    match = re.search(r"^events started (\d+), ended (\d+)", text, re.MULTILINE)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def test_webcam_events_against_the_server(settings):
    with live_server(replace(settings, **EAGER_EVENTS)) as server:
        done = cli("webcam", "--source", str(REPO / "samples" / "slideshow.mp4"), "--headless", "--events",
                   "--url", server.ws)  # fmt: skip
    assert done.returncode == 0, done.stderr
    counts = summary_counts(done.stdout)
    assert counts["sent"] == 60 and counts["results"] + counts["dropped"] == 60 and counts["errors"] == 0
    events = event_lines(done.stdout, "image camera")
    starts = [line for line in events if "  start  " in line]
    assert starts, done.stdout  # the scenes change: some label rises over its baseline
    assert summary_events(done.stdout) == (len(starts), len(events) - len(starts))
    summary = ("frames sent ", "round trip ", "server stage medians", "events started ")
    others = [line for line in done.stdout.splitlines() if line not in events and not line.startswith(summary)]
    assert others == []  # no result lines: nothing but the events and the summary


def test_mic_events_against_the_server(settings, tmp_path):
    rng = np.random.default_rng(0)
    sound = np.concatenate([0.1 * rng.standard_normal(10 * 16000), tone(880, 6, 16000, amplitude=0.5)])
    wav = tmp_path / "noise_then_tone.wav"
    soundfile.write(wav, sound.astype(np.float32), 16000, subtype="PCM_16")
    with live_server(replace(settings, **EAGER_EVENTS)) as server:
        done = cli("mic", "--file", str(wav), "--fast", "--events", "--url", server.ws)
    assert done.returncode == 0, done.stderr
    events = event_lines(done.stdout, "audio mic")
    assert [line for line in events if "  start  " in line], done.stdout
    assert not re.search(r"^\[audio mic #", done.stdout, re.MULTILINE)
    counts = summary_counts(done.stdout)
    assert counts["sent"] == 80 and counts["errors"] == 0 and "audio sent 16.0 s" in done.stdout


def test_silent_audio_comes_back_marked_silent(server, tmp_path):
    wav = tmp_path / "silence.wav"
    soundfile.write(wav, np.zeros(int(3.5 * 16000), np.float32), 16000, subtype="PCM_16")
    done = cli("mic", "--file", str(wav), "--fast", "--url", server.ws)
    assert done.returncode == 0, done.stderr
    counts = summary_counts(done.stdout)
    assert counts["sent"] == 18 and counts["errors"] == 0 and counts["lost"] == 0
    assert counts["results"] + counts["dropped"] == 4  # every window answered or counted dropped, as with sound
    results = re.findall(r"^\[audio mic #\d+\] (.*)  \(\d+ ms\)$", done.stdout, re.MULTILINE)
    assert results and results == ["(silent)"] * counts["results"], done.stdout
    assert f"silent results {counts['results']} " in done.stdout


def test_a_watching_client_gets_typed_copies_of_another_clients_stream(settings):
    # Scenes far apart even for random weights (photos alike in colour can embed almost alike there).
    pictures = [(REPO / "samples" / name).read_bytes() for name in ("cat.jpg", "rocket.jpg", "astronaut.jpg")]

    async def scenario(url: str) -> tuple[SensoriumClient, SensoriumClient, list[Any]]:
        got: list[Any] = []

        def listed() -> set[tuple[int, str, str]]:  # the streams of the latest list
            latest = [m for m in got if isinstance(m, client_lib.Streams)][-1:]
            return {(s.client, s.modality, s.stream) for m in latest for s in m.streams}

        async with SensoriumClient(url) as watcher:

            async def collect() -> None:
                async for message in watcher.events():
                    got.append(message)

            collecting = asyncio.create_task(collect())
            assert await watcher.watch()
            async with SensoriumClient(url) as streamer:
                streaming = (streamer.client_id, "image", "camera")
                for seq in range(30):  # three scenes of ten frames: the second and third raise labels over the first
                    await streamer.wait_for_slot("image", "camera", limit=2)
                    assert await streamer.send_frame(pictures[seq // 10], seq)
                    if seq == 0:  # the stream is live: the watcher is told
                        await watcher.wait_until(lambda: streaming in listed(), timeout=10)
                assert await streamer.end_stream("image", "camera")
                assert await streamer.wait_ended("image", "camera", timeout=script.END_WAIT_S)
            # The list that no longer holds the stream comes after every copy of it.
            await watcher.wait_until(lambda: streaming not in listed(), timeout=10)
        await collecting
        return watcher, streamer, got

    with live_server(replace(settings, **EAGER_EVENTS)) as server:
        watcher, streamer, got = asyncio.run(scenario(server.ws))
    streamer_id = streamer.client_id
    assert streamer_id is not None and streamer_id != watcher.client_id
    results = [m for m in got if isinstance(m, client_lib.Result)]
    events = [m for m in got if isinstance(m, client_lib.Event)]
    thumbnails = [m for m in got if isinstance(m, client_lib.Thumbnail)]
    assert results and all(r.watched and r.client == streamer_id and r.round_trip_ms is None for r in results)
    assert {e.watched for e in events} == {True} and {e.client for e in events} == {streamer_id}
    assert thumbnails and thumbnails[0].format == "jpeg" and thumbnails[0].data.startswith(b"\xff\xd8")
    # the copies answer none of the watcher's inputs; the streamer got the originals, counted on its books
    assert (watcher.ledger.sent, watcher.ledger.results, watcher.ledger.event_starts) == (0, 0, 0)
    assert streamer.ledger.results + streamer.ledger.dropped == 30
    assert streamer.ledger.event_starts == sum(e.state == "start" for e in events) >= 1


def test_a_results_embedding_is_a_float32_array_and_a_malformed_one_is_named():
    message = msgpack.unpackb(fake_result("image", "camera", 3))
    vector = np.array([0.6, 0.0, -0.8], "<f4")
    result = client_lib.Result.from_message({**message, "embedding": vector.tobytes(), "embedding_dim": 3}, 1.0)
    assert result.embedding is not None and result.embedding.dtype == np.float32
    np.testing.assert_array_equal(result.embedding, vector)
    assert result.line().endswith("[3-d embedding]")
    assert client_lib.Result.from_message(message, 1.0).embedding is None
    with pytest.raises(ValueError, match="holds 3 floats; its 'embedding_dim' says 4"):
        client_lib.Result.from_message({**message, "embedding": vector.tobytes(), "embedding_dim": 4}, 1.0)
    with pytest.raises(ValueError, match="float32 bytes"):
        client_lib.Result.from_message({**message, "embedding": b"\0" * 5}, 1.0)


def test_webcam_embeddings_flag_asks_for_them_and_shows_their_size(server):
    done = cli("webcam", "--source", str(REPO / "samples" / "slideshow.mp4"), "--headless", "--url", server.ws,
               "--frames", "3", "--embeddings")  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("[image camera #")]
    assert lines and all(line.endswith("[32-d embedding]") for line in lines), done.stdout
