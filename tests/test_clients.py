"""The webcam and microphone clients against the real server with the small test models."""

from __future__ import annotations

import argparse
import asyncio
import builtins
import io
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile

from clients import microphone, webcam
from clients.client import SensoriumClient
from clients.ledger import Ledger
from clients.terminal import LivePrinter

from .helpers import REPO, LiveServer, free_port, tone

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
        fps=10.0, top_k=None, min_score=None, headless=True, duration=0, frames=0, connect_timeout=5,
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
