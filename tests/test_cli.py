"""The command line, as a user runs it: real processes, real ports."""

import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import websockets

from .helpers import audio, frame, free_port, receive, tone

SENSORIUM = shutil.which("sensorium") or str(Path(sys.executable).parent / "sensorium")


def run_cli(args: list[str], env: dict[str, str], timeout: float = 90) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    done = subprocess.run(
        [SENSORIUM, *args], env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    return done, time.monotonic() - started


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(HF_HOME=str(tmp_path / "hf-home"), **extra)
    return env


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--no-audio", "--image-model", "ViT-B-32", "--image-pretrained", "datacomp_xl_s13b_b90k"], "--image-model"),
        (["--no-image", "--audio-model", "laion/clap-htsat-unfused"], "--audio-model"),
        (["--no-audio", "--image-model", "local-dir:/nonexistent/folder"], "open_clip_config.json"),
    ],
)
def test_missing_model_offline_fails_fast_with_a_way_out(tmp_path, args, flag):
    done, took = run_cli(["serve", "--port", str(free_port()), *args], clean_env(tmp_path, HF_HUB_OFFLINE="1"))
    assert done.returncode == 2, done.stderr
    assert flag in done.stderr
    assert "Traceback" not in done.stderr
    assert took < 60


def test_unreachable_hub_fails_fast_without_the_offline_switch(tmp_path):
    env = clean_env(tmp_path, HF_ENDPOINT="http://127.0.0.1:9")  # nothing listens there
    done, took = run_cli(["serve", "--port", str(free_port()), "--no-image"], env)
    assert done.returncode == 2, done.stderr
    assert "unreachable" in done.stderr and "--audio-model" in done.stderr
    assert took < 60  # the hub client alone would retry for about half a minute per file


def test_bad_flags_are_refused():
    done = subprocess.run([SENSORIUM, "serve", "--no-image", "--no-audio"], capture_output=True, text=True)
    assert done.returncode == 2 and "nothing to serve" in done.stderr


def test_python_m_server_serves_images_and_audio(image_model, audio_model, label_dir, tmp_path):
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "server",
        "--port",
        str(port),
        "--image-model",
        image_model,
        "--audio-model",
        audio_model,
        "--image-labels",
        str(label_dir / "image.txt"),
        "--audio-labels",
        str(label_dir / "audio.txt"),
    ]
    process = subprocess.Popen(args, env=clean_env(tmp_path, HF_HUB_OFFLINE="1"), stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                reply = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                if reply.json()["status"] == "ok":
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            time.sleep(0.05)

        async def scenario():
            async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as ws:
                assert (await receive(ws))["type"] == "welcome"
                await ws.send(frame(1))
                image = await receive(ws)
                for i in range(6):
                    await ws.send(audio(i, tone(880, 0.25, 44100), rate=44100))
                sound = await receive(ws, timeout=20)
                return image, sound

        image, sound = asyncio.run(scenario())
        assert (image["type"], image["modality"]) == ("result", "image")
        assert (sound["type"], sound["modality"]) == ("result", "audio")
    finally:
        process.terminate()
        process.wait(timeout=20)
    assert process.returncode in (0, -15)
