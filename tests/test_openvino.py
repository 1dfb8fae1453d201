"""The OpenVINO backend, held to torch fp32 through the real loading paths on the pictures and sounds in samples/."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from server import openvino_backend
from server.audio import decode_sound_file, resample, split_windows
from server.devmodels import write_open_clip
from server.encoders import Encoder, ModelSpec, build_encoder, missing_model
from server.settings import Settings

from .helpers import NO_OPENVINO, REPO, audio, connect, frame, live_server, openvino_installed, receive_until

if not openvino_installed():
    pytest.skip(NO_OPENVINO, allow_module_level=True)

SAMPLES = REPO / "samples"
PICTURES = sorted(SAMPLES.glob("*.jpg"))
SOUNDS = sorted([*SAMPLES.glob("*.wav"), *SAMPLES.glob("*.flac")])
WINDOW_S = 5.0
MIN_COSINE = 0.999
HAS_BF16 = openvino_backend.cpu_has_bf16()
PRECISIONS = [
    "fp32",
    pytest.param(
        "bf16", marks=pytest.mark.skipif(not HAS_BF16, reason="OpenVINO finds no bf16 units on this CPU (refused)")
    ),
]


@pytest.fixture(scope="module")
def ov_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private conversion cache for this module's loads (the one that tests reuse is tested on its own)."""
    folder = tmp_path_factory.mktemp("openvino")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(openvino_backend.CACHE_ENV, str(folder))
        yield folder


@pytest.fixture(scope="module")
def encoders(ov_cache: Path) -> Iterator[dict[tuple[str, str, str], Encoder]]:
    """Encoders by (model, backend, precision), each built once for the module."""
    built: dict[tuple[str, str, str], Encoder] = {}
    yield built
    built.clear()


def encoder(built: dict[tuple[str, str, str], Encoder], spec: ModelSpec) -> Encoder:
    key = (spec.model, spec.backend, spec.precision)
    if key not in built:
        built[key] = build_encoder(spec)
    return built[key]


def pictures() -> list[np.ndarray]:
    return [np.asarray(Image.open(path).convert("RGB")) for path in PICTURES]


def sound_windows(rate: int) -> list[np.ndarray]:
    """Every sample sound at the model's rate, cut into the server's 5 s windows."""
    windows = []
    for path in SOUNDS:
        samples, source_rate = decode_sound_file(path.read_bytes())
        windows += [window for _, window in split_windows(resample(samples, source_rate, rate), rate, WINDOW_S)]
    return windows


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    similarity: np.ndarray = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return similarity


def held_to_torch(reference: Encoder, candidate: Encoder, inputs: list[np.ndarray]) -> np.ndarray:
    """Embeddings of ``inputs`` by both, as one batch and one by one (the batch is dynamic): their cosines."""
    expected = reference.encode(reference.prepare(inputs))
    batched = candidate.encode(candidate.prepare(inputs))
    single = np.concatenate([candidate.encode(candidate.prepare([x])) for x in inputs[:2]])
    assert batched.dtype == np.float32 and batched.shape == expected.shape
    np.testing.assert_allclose(np.linalg.norm(batched, axis=-1), 1.0, atol=1e-5)
    found = np.concatenate([cosines(expected, batched), cosines(expected[:2], single)])
    print(f"{candidate.modality} {candidate.precision}: 1 - cosine to torch fp32, at most {1 - found.min():.1e}")
    assert found.min() >= MIN_COSINE, found
    return found


def check_encoder_fields(reference: Encoder, candidate: Encoder, precision: str) -> None:
    assert (candidate.backend, candidate.device, candidate.precision) == ("openvino", "cpu", precision)
    assert candidate.modality == reference.modality and candidate.name == reference.name
    assert candidate.scoring == reference.scoring
    assert (candidate.input_side, candidate.sample_rate) == (reference.input_side, reference.sample_rate)
    # Text stays on torch fp32: the label embeddings, and so their cache identity, are torch's.
    assert candidate.identity == reference.identity
    prompts = ["a photo of a cat.", "This is a sound of speech."]
    np.testing.assert_array_equal(candidate.encode_text(prompts), reference.encode_text(prompts))


@pytest.mark.parametrize("precision", PRECISIONS)
def test_images_match_torch_fp32(encoders, image_model: str, precision: str) -> None:
    reference = encoder(encoders, ModelSpec("image", image_model))
    candidate = encoder(encoders, ModelSpec("image", image_model, backend="openvino", precision=precision))
    check_encoder_fields(reference, candidate, precision)
    held_to_torch(reference, candidate, pictures())


@pytest.mark.parametrize("precision", PRECISIONS)
def test_audio_matches_torch_fp32(encoders, audio_model: str, precision: str) -> None:
    reference = encoder(encoders, ModelSpec("audio", audio_model))
    candidate = encoder(encoders, ModelSpec("audio", audio_model, backend="openvino", precision=precision))
    check_encoder_fields(reference, candidate, precision)
    windows = sound_windows(int(reference.sample_rate or 0))
    assert len(windows) >= len(SOUNDS)
    held_to_torch(reference, candidate, windows)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_full_size_vit_b32_matches_torch_fp32(encoders, tmp_path_factory, precision: str) -> None:
    model = f"local-dir:{write_open_clip(tmp_path_factory.mktemp('vit-b-32'), 'ViT-B-32')}"
    reference = encoder(encoders, ModelSpec("image", model))
    candidate = encoder(encoders, ModelSpec("image", model, backend="openvino", precision=precision))
    assert candidate.input_side == 224
    held_to_torch(reference, candidate, pictures())


@pytest.mark.skipif(HAS_BF16, reason="this CPU has bf16 units: bf16 runs, and is held to fp32 above")
def test_bf16_without_bf16_units_is_refused_before_loading(image_model: str, audio_model: str) -> None:
    # OpenVINO itself would take the bf16 hint and quietly run f32; the backend says so instead.
    for spec in (
        ModelSpec("image", image_model, backend="openvino", precision="bf16"),
        ModelSpec("audio", audio_model, backend="openvino", precision="bf16"),
    ):
        problem = missing_model(spec)
        assert problem and "bf16 units" in problem and "--precision fp32" in problem
        with pytest.raises(ValueError, match="bf16 units"):
            build_encoder(spec)


@pytest.mark.skipif(HAS_BF16, reason="this CPU has bf16 units: the real bf16 path is tested above")
def test_the_bf16_path_compiles_and_says_what_openvino_ran(
    encoders, image_model: str, ov_cache: Path, monkeypatch, caplog
) -> None:
    # As on a CPU with bf16 units, to run the bf16 code path here: OpenVINO takes the hint, runs f32, and the
    # backend's read-back of the compiled precision says so.
    monkeypatch.setattr(openvino_backend, "cpu_has_bf16", lambda: True)
    reference = encoder(encoders, ModelSpec("image", image_model))
    with caplog.at_level("WARNING", logger="sensorium.models"):
        candidate = build_encoder(ModelSpec("image", image_model, backend="openvino", precision="bf16"))
    assert "asked for bf16 and runs f32" in caplog.text
    assert candidate.precision == "bf16" and list(ov_cache.glob("image-*/compiled-bf16"))
    held_to_torch(reference, candidate, pictures())


def test_a_second_load_reads_the_conversion_cache(image_model: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(openvino_backend.CACHE_ENV, str(tmp_path / "cache"))
    spec = ModelSpec("image", image_model, backend="openvino")
    before = openvino_backend.conversions
    first = build_encoder(spec)
    assert isinstance(first, openvino_backend.OpenVinoEncoder) and first.converted
    assert openvino_backend.conversions == before + 1
    (folder,) = (tmp_path / "cache").iterdir()
    assert folder.name.startswith("image-")
    ir = folder / "model.xml"
    written = {path: path.stat().st_mtime_ns for path in (ir, ir.with_suffix(".bin"))}
    blobs = list((folder / "compiled-fp32").glob("*.blob"))
    assert blobs, "OpenVINO kept no compiled blob"

    second = build_encoder(spec)  # as after a restart: the torch model loads again, the IR and blob are read
    assert isinstance(second, openvino_backend.OpenVinoEncoder) and not second.converted
    assert openvino_backend.conversions == before + 1
    assert {path: path.stat().st_mtime_ns for path in written} == written
    assert list((folder / "compiled-fp32").glob("*.blob")) == blobs
    inputs = pictures()
    np.testing.assert_allclose(first.encode(first.prepare(inputs)), second.encode(second.prepare(inputs)), atol=1e-6)

    # A damaged IR is converted again, in its place.
    shutil.rmtree(folder / "compiled-fp32")
    ir.with_suffix(".bin").write_bytes(b"\0" * 16)
    third = build_encoder(spec)
    assert isinstance(third, openvino_backend.OpenVinoEncoder) and third.converted
    assert openvino_backend.conversions == before + 2 and ir.with_suffix(".bin").stat().st_size > 16
    np.testing.assert_allclose(third.encode(third.prepare(inputs)), second.encode(second.prepare(inputs)), atol=1e-6)

    # Without a cache every load converts, in memory.
    monkeypatch.setenv(openvino_backend.CACHE_ENV, "")
    assert build_encoder(spec).converted and openvino_backend.conversions == before + 3
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [folder.name]


def test_missing_says_what_to_install_and_what_to_change(image_model: str, monkeypatch) -> None:
    spec = ModelSpec("image", image_model, backend="openvino")
    assert missing_model(spec) is None
    assert "--device cpu" in (missing_model(replace(spec, device="cuda")) or "")
    assert "fp16" in (missing_model(replace(spec, precision="fp16")) or "")
    # The torch backend's checks still apply: the model comes through it.
    assert "open_clip_config.json" in (missing_model(replace(spec, model="local-dir:/nonexistent")) or "")
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if it were not installed
    assert 'pip install "sensorium[openvino]"' in (missing_model(spec) or "")


def test_a_live_server_on_openvino(settings: Settings, ov_cache: Path) -> None:
    assert os.environ[openvino_backend.CACHE_ENV] == str(ov_cache)
    with live_server(replace(settings, backend="openvino", device="cpu", precision="fp32")) as server:
        health = httpx.get(f"{server.http}/health", timeout=10).json()
        assert {m: (v["backend"], v["device"]) for m, v in health["models"].items()} == {
            "image": ("openvino", "cpu"),
            "audio": ("openvino", "cpu"),
        }
        picture = httpx.post(f"{server.http}/v1/classify/image?top_k=3", content=PICTURES[0].read_bytes(), timeout=60)
        assert picture.status_code == 200, picture.text
        assert len(picture.json()["top"]) == 3
        speech = (SAMPLES / "speech.wav").read_bytes()
        sound = httpx.post(
            f"{server.http}/v1/classify/audio?top_k=2",
            content=speech,
            headers={"content-type": "audio/wav"},
            timeout=60,
        )
        assert sound.status_code == 200, sound.text
        assert len(sound.json()["windows"]) >= 1 and len(sound.json()["top"]) == 2

        # The stream path: frames preprocessed off the model's thread, audio through the streaming mel front end.
        samples, rate = decode_sound_file(speech)

        async def stream() -> tuple[dict, dict]:
            ws = await connect(server)
            await ws.send(frame(1, PICTURES[0].read_bytes()))
            image = await receive_until(ws, lambda m: m["type"] == "result" and m["modality"] == "image", 60)
            await ws.send(audio(1, samples[: int(1.5 * rate)], rate=rate))
            sound = await receive_until(ws, lambda m: m["type"] == "result" and m["modality"] == "audio", 60)
            await ws.close()
            return image, sound

        image_result, audio_result = asyncio.run(stream())
        assert image_result["top"] and audio_result["top"]


def test_auto_chooses_openvino_on_a_cpu_and_torch_elsewhere(image_model, audio_model):
    from server.encoders import ModelSpec, choose_backend

    assert choose_backend("auto", ModelSpec("image", image_model, device="cpu")) == "openvino"
    assert choose_backend("auto", ModelSpec("audio", audio_model, device="cpu")) == "openvino"
    assert choose_backend("auto", ModelSpec("image", image_model, device="cuda")) == "torch"
    assert choose_backend("torch", ModelSpec("image", image_model, device="cpu")) == "torch"
