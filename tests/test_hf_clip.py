"""transformers CLIP, SigLIP and SigLIP 2 (NaFlex), served through their real loading path from random-weight
checkpoints written by the library's own save_pretrained, held to the stock processor and model."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import websockets
from PIL import Image
from transformers import AutoModel, AutoProcessor

from server import openvino_backend
from server.devmodels import write_hf_clip, write_siglip, write_siglip2
from server.encoders import Encoder, ModelSpec, build_encoder, choose_backend, missing_model, model_family
from server.hub import ModelUnavailable
from server.settings import Settings

from .helpers import NO_OPENVINO, REPO, frame, live_server, openvino_installed, receive, receive_until

MIN_COSINE = 0.999
WRITERS = {"clip": write_hf_clip, "siglip": write_siglip, "siglip2": write_siglip2}
PROMPTS = [
    "a photo of a dog.",
    "a photo of a very small and extremely fluffy golden retriever puppy sitting on a red sofa!",
    "!",
    "a",
    "x " * 100,  # longer than any text tower: truncated
    "A Photo Of A Cat.",
]


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {kind: write(root / kind) for kind, write in WRITERS.items()}


@pytest.fixture(scope="module")
def pictures() -> list[np.ndarray]:
    """The sample pictures and smooth random ones of odd sizes (wide, tall, tiny, exactly square)."""
    out = [np.asarray(Image.open(path).convert("RGB")) for path in sorted((REPO / "samples").glob("*.jpg"))]
    rng = np.random.default_rng(1)
    for height, width in [(480, 640), (640, 480), (225, 1000), (33, 400), (100, 90), (64, 64)]:
        coarse = rng.integers(0, 255, (height // 8 + 1, width // 8 + 1, 3), np.uint8)
        out.append(np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC)))
    return out


@pytest.fixture(scope="module")
def stock(folders: dict[str, Path]) -> Any:
    """transformers' own processor and model for a folder, each loaded once."""
    loaded: dict[str, tuple[Any, Any]] = {}

    def get(kind: str) -> tuple[Any, Any]:
        if kind not in loaded:
            loaded[kind] = AutoProcessor.from_pretrained(folders[kind]), AutoModel.from_pretrained(folders[kind]).eval()
        return loaded[kind]

    return get


@pytest.fixture(scope="module")
def encoders(folders: dict[str, Path]) -> dict[str, Encoder]:
    return {kind: build_encoder(ModelSpec("image", str(folder))) for kind, folder in folders.items()}


def unit(output: Any) -> np.ndarray:
    return torch.nn.functional.normalize(output.pooler_output, dim=-1).numpy()


def text_inputs(kind: str, processor: Any, prompts: list[str]) -> Any:
    # What each family's users pass: SigLIP was trained on max_length padding; CLIP's 77 is its whole context.
    length = 77 if kind == "clip" else 64
    return processor(text=prompts, padding="max_length", max_length=length, truncation=True, return_tensors="pt")


@pytest.mark.parametrize("kind", WRITERS)
def test_image_embeddings_match_the_stock_processor_and_model(kind, encoders, stock, pictures):
    processor, model = stock(kind)
    with torch.inference_mode():
        expected = np.concatenate(
            [
                unit(model.get_image_features(**processor(images=Image.fromarray(p), return_tensors="pt")))
                for p in pictures
            ]
        )
    encoder = encoders[kind]
    batched = encoder.encode(encoder.prepare(pictures))
    one_by_one = encoder.encode(encoder.prepare([encoder.prepare_one(p) for p in pictures]))
    assert batched.shape == expected.shape and batched.dtype == np.float32
    print(f"{kind}: least image cosine to the stock processor and model {(batched * expected).sum(-1).min():.6f}")
    assert (batched * expected).sum(-1).min() >= MIN_COSINE
    assert (one_by_one * expected).sum(-1).min() >= MIN_COSINE


@pytest.mark.parametrize("kind", WRITERS)
def test_text_embeddings_match_the_stock_tokenizer_and_model(kind, encoders, stock):
    processor, model = stock(kind)
    prompts = PROMPTS * 3
    with torch.inference_mode():
        expected = unit(model.get_text_features(**text_inputs(kind, processor, prompts)))
    # CLIP's are cut to each chunk's longest prompt (its causal text tower makes that exact), SigLIP's are not.
    found = encoders[kind].encode_text(prompts)
    print(f"{kind}: largest text embedding difference to the stock model {np.abs(found - expected).max():.2e}")
    assert np.abs(found - expected).max() < 1e-5
    assert encoders[kind].encode_text([]).shape == (0, expected.shape[1])


@pytest.mark.parametrize("kind", WRITERS)
def test_scores_are_the_models_own(kind, encoders, stock, pictures):
    """Sensorium's scores of the same inputs are what the model's forward makes of them: sigmoid(logits) per label
    for SigLIP, a softmax of the logits over the prompts for CLIP."""
    processor, model = stock(kind)
    images = [Image.fromarray(p) for p in pictures[:4]]
    inputs = processor(images=images, return_tensors="pt")
    with torch.inference_mode():
        logits = model(**inputs, **text_inputs(kind, processor, PROMPTS)).logits_per_image
    expected = (logits.softmax(-1) if kind == "clip" else torch.sigmoid(logits)).numpy()
    encoder = encoders[kind]
    assert encoder.scoring.kind == ("softmax" if kind == "clip" else "sigmoid")
    similarity = encoder.encode(dict(inputs)) @ encoder.encode_text(PROMPTS).T
    scores = encoder.scoring.scores(similarity)
    assert scores.max() - scores.min() > 0.5  # spread out: the check below would hold for flat scores too
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-6)


def test_encoder_fields(encoders, folders):
    clip, siglip, naflex = encoders["clip"], encoders["siglip"], encoders["siglip2"]
    assert (clip.modality, clip.backend, clip.device, clip.precision) == ("image", "torch", "cpu", "fp32")
    assert clip.name == str(folders["clip"]) and clip.identity.startswith(f"transformers:{folders['clip']}:")
    assert (clip.input_side, siglip.input_side, naflex.input_side) == (64, 64, 256)
    assert clip.mel_stream() is None and clip.sample_rate is None
    assert siglip.scoring.describe() == {"kind": "sigmoid", "scale": 10.0, "bias": -1.0}
    assert len({encoder.identity for encoder in encoders.values()}) == 3


def test_bf16_is_honoured(folders, encoders, pictures):
    bf16 = build_encoder(ModelSpec("image", str(folders["siglip"]), precision="bf16"))
    assert bf16.precision == "bf16" and bf16.identity != encoders["siglip"].identity
    fp32 = encoders["siglip"].encode(encoders["siglip"].prepare(pictures))
    assert (bf16.encode(bf16.prepare(pictures)) * fp32).sum(-1).min() > 0.98


@pytest.fixture
def hub_cache(tmp_path: Path, folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Hugging Face cache holding the CLIP folder as ``sensorium-test/tiny-clip``, laid out as the hub client
    lays out a download (refs/main names the snapshot)."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    repo = cache / "models--sensorium-test--tiny-clip"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(folders["clip"], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_a_hub_id_loads_from_the_cache_offline(hub_cache, encoders, pictures):
    spec = ModelSpec("image", "sensorium-test/tiny-clip")
    assert spec.family == "transformers" and missing_model(spec) is None
    encoder = build_encoder(spec)
    assert encoder.name == "sensorium-test/tiny-clip"
    reference = encoders["clip"]
    np.testing.assert_allclose(encoder.encode(encoder.prepare(pictures)), reference.encode(reference.prepare(pictures)))
    problem = missing_model(ModelSpec("image", "sensorium-test/not-there"))
    assert problem is not None and "not in the local cache" in problem and str(hub_cache) in problem


def test_a_folder_of_another_model_type_is_refused_by_name(audio_model):
    spec = ModelSpec("image", audio_model)  # a CLAP folder: config.json, model_type "clap"
    assert model_family("image", audio_model) == "transformers"
    problem = missing_model(spec)
    assert problem is not None and "model_type 'clap'" in problem and "--audio-model" in problem
    assert audio_model in problem
    with pytest.raises(ModelUnavailable, match="model_type 'clap'"):
        build_encoder(spec)


def test_a_processor_setting_not_reproduced_is_refused_by_name(folders, tmp_path):
    folder = tmp_path / "nearest"
    shutil.copytree(folders["clip"], folder)
    config = json.loads((folder / "processor_config.json").read_text())
    config["image_processor"]["resample"] = 0  # PIL's NEAREST
    (folder / "processor_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelUnavailable, match="resample 0 is not supported"):
        build_encoder(ModelSpec("image", str(folder)))


def test_a_folder_without_config_json_is_refused(tmp_path):
    problem = missing_model(ModelSpec("image", str(tmp_path)))
    assert problem is not None and "no config.json" in problem and "open_clip_config.json" in problem


@pytest.fixture
def image_only(settings: Settings) -> Any:
    def make(folder: Path) -> Settings:
        return dataclasses.replace(settings, image_model=str(folder), image_pretrained=None, no_audio=True)

    return make


@pytest.mark.parametrize(("kind", "scoring"), [("clip", "softmax"), ("siglip", "sigmoid"), ("siglip2", "sigmoid")])
def test_a_live_server_serves_the_folder(kind, scoring, folders, image_only, pictures) -> None:
    with live_server(image_only(folders[kind])) as server:
        results = asyncio.run(_frames(server, [(REPO / "samples" / "cat.jpg").read_bytes()] * 2))
    welcome, answers = results
    described = welcome["modalities"]["image"]
    assert described["model"] == str(folders[kind]) and described["scoring"]["kind"] == scoring
    assert ("bias" in described["scoring"]) == (scoring == "sigmoid")
    for seq, answer in enumerate(answers, 1):
        assert answer["seq"] == seq and answer["top"]
        top = answer["top"]
        assert [t["score"] for t in top] == sorted((t["score"] for t in top), reverse=True)
    assert answers[0]["top"] == answers[1]["top"]


async def _frames(server: Any, pictures: list[bytes]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    ws = await websockets.connect(server.ws, max_size=None)
    welcome = await receive(ws)
    answers = []
    for seq, data in enumerate(pictures, 1):
        await ws.send(frame(seq, data, stream="porch"))
        answers.append(await receive_until(ws, lambda m, seq=seq: m["type"] == "result" and m["seq"] == seq))
    await ws.close()
    return welcome, answers


@pytest.mark.skipif(not openvino_installed(), reason=NO_OPENVINO)
@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_openvino_takes_fixed_size_towers(kind, folders, encoders, pictures, tmp_path, monkeypatch):
    monkeypatch.setenv(openvino_backend.CACHE_ENV, str(tmp_path))
    spec = ModelSpec("image", str(folders[kind]))
    assert choose_backend("auto", spec) == "openvino"
    converted = build_encoder(dataclasses.replace(spec, backend="openvino"))
    reference = encoders[kind]
    assert (converted.scoring, converted.identity, converted.input_side) == (
        reference.scoring,
        reference.identity,
        reference.input_side,
    )
    expected = reference.encode(reference.prepare(pictures))
    batched = converted.encode(converted.prepare(pictures))
    single = converted.encode(converted.prepare(pictures[:1]))
    assert (batched * expected).sum(-1).min() >= MIN_COSINE and float(single[0] @ expected[0]) >= MIN_COSINE


@pytest.mark.skipif(not openvino_installed(), reason=NO_OPENVINO)
def test_openvino_refuses_naflex_and_auto_falls_back_to_torch(folders):
    spec = ModelSpec("image", str(folders["siglip2"]))
    problem = missing_model(dataclasses.replace(spec, backend="openvino"))
    assert problem is not None and "NaFlex" in problem and "--backend torch" in problem
    assert choose_backend("auto", spec) == "torch"
