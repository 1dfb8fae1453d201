"""The command line, as a user runs it: real processes, real ports."""

import asyncio
import os
import shutil
import socket
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


def test_every_missing_model_is_reported_once_before_the_server_starts(tmp_path):
    """A missing model was once reported three times, after "Uvicorn running on ...", naming only the first."""
    done, _ = run_cli(["serve", "--port", str(free_port())], clean_env(tmp_path, HF_HUB_OFFLINE="1"))
    assert done.returncode == 2, done.stderr
    output = done.stdout + done.stderr
    assert output.count("image model 'ViT-B-32'") == 1 and output.count("audio model 'laion/clap-htsat-unfused'") == 1
    assert "sensorium dev-models" in output
    assert "Uvicorn running" not in output and "Started server process" not in output


def test_a_mistyped_label_path_is_reported_before_the_models_load(tmp_path, image_model):
    """It was reported after the models loaded, worded as if a file had been deleted."""
    args = ["serve", "--port", str(free_port()), "--no-audio", "--image-model", image_model]
    done, _ = run_cli([*args, "--image-labels", str(tmp_path / "imgae.txt")], clean_env(tmp_path, HF_HUB_OFFLINE="1"))
    assert done.returncode == 2, done.stderr
    assert "imgae.txt: no such file" in done.stderr and "deleted" not in done.stderr
    assert "Started server process" not in done.stdout + done.stderr  # nothing started, nothing loaded


def test_a_taken_port_is_reported_before_the_models_load(tmp_path, image_model):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["serve", "--port", str(port), "--no-audio", "--image-model", image_model, "--log-level", "debug"]
        done, _ = run_cli(args, clean_env(tmp_path, HF_HUB_OFFLINE="1"))
    assert done.returncode == 2, done.stderr
    assert f"127.0.0.1:{port}" in done.stderr and "in use" in done.stderr and "--port" in done.stderr
    assert "models loaded" not in done.stdout + done.stderr


@pytest.mark.parametrize("family", ["transformers-clip", "siglip"])
def test_dev_models_writes_each_image_family_and_says_how_to_serve_it(tmp_path, family):
    done, _ = run_cli(["dev-models", str(tmp_path), "--image-family", family], clean_env(tmp_path, HF_HUB_OFFLINE="1"))
    assert done.returncode == 0, done.stderr
    flag = next(line for line in done.stdout.splitlines() if line.startswith("image model: "))
    image_model = flag.removeprefix("image model: --image-model ")
    from server.encoders import ModelSpec, build_encoder

    encoder = build_encoder(ModelSpec("image", image_model))
    assert ModelSpec("image", image_model).family == "transformers"
    assert encoder.scoring.kind == ("sigmoid" if family == "siglip" else "softmax")
    assert encoder.encode_text(["a cat"]).shape[0] == 1
