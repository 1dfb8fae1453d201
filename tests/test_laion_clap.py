"""laion_clap ``.pt`` checkpoints (server/laion_clap.py): laion_clap's own embeddings, and clear refusals.

The equivalence needs laion_clap itself, which the main environment cannot hold (numpy<2): ``.ci/laion-env``
builds ``.venv-laion`` (the fixture runs it first: instant once built), and the ``laion`` fixture runs
tests/laion_reference.py there once for the module. That script writes random-weight checkpoints with
laion_clap's own code, as its training loop saves them, and embeds audio and prompts with laion_clap's own
inference; here the same files go through ``build_encoder`` and must
give the same embeddings. Both sides read ``roberta-base`` (a small random stand-in of the real width, written
by transformers' save_pretrained, with a byte-level BPE tokenizer trained here) from one hub cache.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from server.devmodels import TOKENIZER_CORPUS, write_open_clip, write_roberta_bpe
from server.encoders import ModelSpec, build_encoder, missing_model
from server.hub import ModelUnavailable
from server.laion_clap import read_state_dict

from .helpers import REPO, live_server

LAION_PYTHON = REPO / ".venv-laion" / "bin" / "python"
CASES = {"tiny": "HTSAT-tiny:unfused", "fused": "HTSAT-tiny:fused", "base": "HTSAT-base:unfused"}
BAR = 0.9999  # cosine of Sensorium's embedding and laion_clap's, per clip and per prompt
RATE = 48000
PROMPTS = [
    "a dog barking",
    "rain on a window",
    "This is a sound of speech, music, singing, a door knock and an alarm siren " * 4,  # past 77 tokens
]

# The laion runs (several minutes on a busy 2-core machine) happen in the first test's setup.
pytestmark = pytest.mark.timeout(1200)


def waveforms() -> dict[str, np.ndarray]:
    """Clips laion_clap embeds whole: none over 10 s (it crops longer ones at random), one exactly 10 s."""
    rng = np.random.default_rng(7)
    t = np.arange(round(3.7 * RATE)) / RATE
    return {
        "a_tone": (0.3 * np.sin(2 * np.pi * 440 * np.arange(RATE) / RATE)).astype(np.float32),
        "b_chirp": (0.5 * np.sin(2 * np.pi * (200 + 800 * t) * t) + 0.05 * rng.standard_normal(t.size)).astype(
            np.float32
        ),
        "c_noise": (0.2 * rng.standard_normal(10 * RATE)).astype(np.float32),
    }


def write_hub_cache(hub: Path, scratch: Path) -> None:
    """``roberta-base`` (model and tokenizer) and the two tokenizers laion_clap loads on import, in hub layout."""
    from transformers import RobertaConfig, RobertaModel

    scratch.mkdir(parents=True)
    write_roberta_bpe(scratch)
    vocab_size = len(json.loads((scratch / "vocab.json").read_text()))
    # laion_clap's text projection takes RoBERTa-base's 768 wide output; depth and vocabulary can be small.
    config = RobertaConfig(
        vocab_size=vocab_size,
        hidden_size=768,
        num_attention_heads=12,
        num_hidden_layers=2,
        intermediate_size=64,
        max_position_embeddings=514,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    torch.manual_seed(3)
    RobertaModel(config).save_pretrained(scratch / "model")
    words = sorted(set(TOKENIZER_CORPUS.lower().replace(".", " ").replace("{}", " ").split()))
    (scratch / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    bpe_files = [scratch / "vocab.json", scratch / "merges.txt"]
    roberta = [*bpe_files, scratch / "model" / "config.json", scratch / "model" / "model.safetensors"]
    for repo, files in (
        ("roberta-base", roberta),
        ("facebook/bart-base", bpe_files),
        ("bert-base-uncased", [scratch / "vocab.txt"]),
    ):
        folder = hub / f"models--{repo.replace('/', '--')}"
        snapshot = folder / "snapshots" / ("0" * 40)
        snapshot.mkdir(parents=True)
        (folder / "refs").mkdir()
        (folder / "refs" / "main").write_text("0" * 40)
        for file in files:
            shutil.copyfile(file, snapshot / file.name)


def build_laion_env() -> None:
    """Make .venv-laion with .ci/laion-env (minutes once, from PyPI; instant when it is complete), so that
    ``python -m pytest`` alone runs these tests; .ci/run builds it before the tests start."""
    done = subprocess.run(
        [str(REPO / ".ci" / "laion-env")],
        env={**os.environ, "SENSORIUM_PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if done.returncode != 0 or not LAION_PYTHON.is_file():
        pytest.fail(f".ci/laion-env could not build laion_clap's environment:\n{done.stdout}\n{done.stderr}")


@pytest.fixture(scope="module")
def laion(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference run's folder: per case, checkpoint.pt, inputs.npz, audio.npy and text.npy."""
    build_laion_env()
    root = tmp_path_factory.mktemp("laion")
    write_hub_cache(root / "hf" / "hub", root / "roberta")
    np.savez(root / "waveforms.npz", **waveforms())
    (root / "prompts.json").write_text(json.dumps(PROMPTS))
    env = {**os.environ, "HF_HOME": str(root / "hf"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    for overriding in ("HF_HUB_CACHE", "TRANSFORMERS_CACHE"):  # they would take precedence over HF_HOME
        env.pop(overriding, None)
    cases = [arg for name, spec in CASES.items() for arg in ("--case", f"{name}:{spec}")]
    started = time.perf_counter()
    run = subprocess.run(
        [str(LAION_PYTHON), str(REPO / "tests" / "laion_reference.py"), "--work", str(root), *cases],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=1100,
    )
    if run.returncode != 0:
        pytest.fail(
            f"laion_clap's reference run failed ({run.returncode}):\n{run.stdout[-2000:]}\n{run.stderr[-4000:]}"
        )
    print(f"laion_clap reference run: {time.perf_counter() - started:.0f} s\n{run.stdout}")
    return root


@pytest.fixture
def roberta_cache(laion: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Sensorium looks for roberta-base in the hub cache laion_clap read it from."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(laion / "hf" / "hub"))
    return laion / "hf" / "hub"


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    return tmp_path / "empty-cache"


def cosines(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    assert ours.shape == theirs.shape
    return np.sum(ours * theirs, axis=1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))


def reference(laion: Path, case: str) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """The samples laion_clap embedded (after its int16 rounding), in name order, and its audio and text rows."""
    inputs = np.load(laion / case / "inputs.npz")
    clips = {name: inputs[name] for name in sorted(inputs.files)}
    return clips, np.load(laion / case / "audio.npy"), np.load(laion / case / "text.npy")


@pytest.mark.parametrize("case", list(CASES))
def test_embeddings_are_laion_clap_s(laion, roberta_cache, case):
    encoder = build_encoder(ModelSpec("audio", str(laion / case / "checkpoint.pt")))
    clips, audio, text = reference(laion, case)

    one_by_one = np.concatenate([encoder.encode(encoder.prepare([encoder.prepare_one(c)])) for c in clips.values()])
    batched = encoder.encode(encoder.prepare(list(clips.values())))
    found = (cosines(one_by_one, audio), cosines(batched, audio), cosines(encoder.encode_text(PROMPTS), text))
    print(f"{case}: least cosine to laion_clap: audio {found[0].min():.6f}, batched {found[1].min():.6f}, "
          f"text {found[2].min():.6f}")  # fmt: skip
    assert cosines(one_by_one, audio).min() >= BAR, cosines(one_by_one, audio)
    assert cosines(batched, audio).min() >= BAR, cosines(batched, audio)
    assert cosines(encoder.encode_text(PROMPTS), text).min() >= BAR, cosines(encoder.encode_text(PROMPTS), text)

    assert encoder.name == "checkpoint.pt" and encoder.identity.startswith("laion_clap:checkpoint.pt:")
    assert encoder.model.config.audio_config.enable_fusion == (case == "fused")
    stream = encoder.mel_stream(10 * RATE)
    if case == "fused":
        assert stream is None  # fused models take the raw window
    else:  # the streaming front end's features, in place of the window
        assert stream is not None
        stream.push(clips["b_chirp"])
        streamed = encoder.encode(encoder.prepare([stream.features(len(clips["b_chirp"]))]))
        assert cosines(streamed, audio[1:2]).min() >= BAR


def test_the_score_scale_is_the_checkpoint_s(laion, roberta_cache):
    state = read_state_dict(laion / "tiny" / "checkpoint.pt")
    encoder = build_encoder(ModelSpec("audio", str(laion / "tiny" / "checkpoint.pt")))
    assert encoder.scoring.kind == "softmax"
    assert encoder.scoring.scale == pytest.approx(float(state["logit_scale_a"].exp()), rel=1e-6)
    assert encoder.scoring.scale != pytest.approx(1 / 0.07, rel=1e-3)  # laion's initial value: the file's is random


def test_openvino_runs_an_unfused_checkpoint(laion, roberta_cache):
    encoder = build_encoder(ModelSpec("audio", str(laion / "tiny" / "checkpoint.pt"), backend="openvino"))
    clips, audio, _ = reference(laion, "tiny")
    assert encoder.backend == "openvino"
    assert cosines(encoder.encode(encoder.prepare(list(clips.values()))), audio).min() >= BAR


def test_a_server_started_with_a_checkpoint_answers_as_laion_clap(laion, roberta_cache, settings):
    checkpoint = laion / "tiny" / "checkpoint.pt"
    clips, audio, text = reference(laion, "tiny")
    with live_server(replace(settings, audio_model=str(checkpoint), no_image=True)) as server:
        pcm = {"sample_rate": RATE, "channels": 1, "dtype": "float32"}
        response = httpx.post(
            f"{server.http}/v1/embed/audio", params=pcm, content=clips["a_tone"].astype("<f4").tobytes(), timeout=60
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model"] == "checkpoint.pt" and body["windows"] == 1
        assert cosines(np.array(body["embeddings"]), audio[:1]).min() >= BAR
        texts = httpx.post(f"{server.http}/v1/embed/text", json={"texts": PROMPTS, "modality": "audio"}, timeout=60)
        assert texts.status_code == 200, texts.text
        assert cosines(np.array(texts.json()["embeddings"]), text).min() >= BAR


def test_a_tokenizer_folder_beside_the_checkpoint_serves_offline(laion, empty_cache, tmp_path):
    (tmp_path / "roberta-base").mkdir()
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(laion / "roberta" / name, tmp_path / "roberta-base" / name)
    checkpoint = tmp_path / "music.pt"
    checkpoint.symlink_to(laion / "tiny" / "checkpoint.pt")
    spec = ModelSpec("audio", str(checkpoint))
    assert missing_model(spec) is None
    encoder = build_encoder(spec)
    assert encoder.name == "music.pt"
    assert cosines(encoder.encode_text(PROMPTS), reference(laion, "tiny")[2]).min() >= BAR


def edited_checkpoint(laion: Path, out: Path, edit: str) -> Path:
    state = read_state_dict(laion / "tiny" / "checkpoint.pt")
    if edit == "drop":
        del state["audio_branch.norm.bias"]
    elif edit == "add":
        state["audio_branch.mel_conv1d.0.weight"] = torch.zeros(3)
    elif edit == "mel":
        state["audio_branch.logmel_extractor.melW"] = state["audio_branch.logmel_extractor.melW"] * 2
    elif edit == "bert":
        state["text_branch.embeddings.token_type_embeddings.weight"] = torch.zeros(2, 768)
    torch.save({"state_dict": state}, out)
    return out


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("drop", r"1 unfilled, such as \['audio_model.audio_encoder.norm.bias'\]"),
        ("add", r"1 with no place, such as \['audio_model.audio_encoder.mel_conv1d.0.weight'\]"),
        ("mel", "mel filterbank .* is not laion_clap's standard one"),
        ("bert", "the text tower is not RoBERTa"),
    ],
)
def test_weights_that_do_not_fit_are_refused_by_name(laion, roberta_cache, tmp_path, edit, message):
    checkpoint = edited_checkpoint(laion, tmp_path / f"{edit}.pt", edit)
    with pytest.raises(ModelUnavailable, match=message) as refused:
        build_encoder(ModelSpec("audio", str(checkpoint)))
    assert str(checkpoint) in str(refused.value)


# --- bad files, told apart without laion_clap ----------------------------------------------------


class TrainingState:
    """A custom class in a checkpoint: unpickling it would import this module and call its code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (str(self.marker),)  # what a hostile file would run on load


@pytest.mark.parametrize("kind", ["namespace", "custom"])
def test_a_checkpoint_that_needs_code_is_refused_without_running_it(tmp_path, kind):
    marker = tmp_path / "ran"
    extra = argparse.Namespace(lr=0.1) if kind == "namespace" else TrainingState(marker)
    path = tmp_path / f"{kind}.pt"
    torch.save({"state_dict": {"logit_scale_a": torch.zeros(())}, "args": extra}, path)
    with pytest.raises(ModelUnavailable) as refused:
        build_encoder(ModelSpec("audio", str(path)))
    message = str(refused.value)
    assert str(path) in message and "weights_only=True" in message
    assert ("argparse.Namespace" if kind == "namespace" else "mkdir") in message
    assert f"torch.save({{'state_dict': c['state_dict']}}, '{tmp_path / kind}-weights.pt')" in message  # how to convert
    assert not marker.exists()


def test_an_open_clip_state_dict_is_not_taken_for_clap(tmp_path):
    folder = write_open_clip(tmp_path / "oc")
    path = tmp_path / "clip.pt"
    shutil.copyfile(folder / "open_clip_pytorch_model.bin", path)
    with pytest.raises(ModelUnavailable, match=r"not a laion_clap CLAP checkpoint \(it looks like an open_clip"):
        build_encoder(ModelSpec("audio", str(path)))


def test_a_truncated_checkpoint_is_refused(tmp_path):
    path = tmp_path / "cut.pt"
    torch.save({"state_dict": {"audio_branch.bn0.weight": torch.ones(4096)}}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelUnavailable, match=r"cut\.pt: cannot be read as a torch checkpoint; is it truncated"):
        build_encoder(ModelSpec("audio", str(path)))


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("/nowhere/630k-audioset-best.pt", "no such file"),
        ("laion-clap:630k-audioset-best.pt", r"is not in the local cache .* the hub is offline"),
        ("laion-clap:630k-audioset-best", r"expected laion-clap:FILE, a checkpoint file of the hub repo"),
    ],
)
def test_what_is_missing_is_said_before_loading(empty_cache, model, message):
    problem = missing_model(ModelSpec("audio", model))
    assert problem is not None
    assert re.search(message, problem), problem


def test_a_missing_tokenizer_is_said_with_how_to_get_it(empty_cache, tmp_path):
    checkpoint = tmp_path / "630k-audioset-best.pt"
    torch.save({"state_dict": {}}, checkpoint)
    problem = missing_model(ModelSpec("audio", str(checkpoint)))
    assert problem is not None
    assert "needs roberta-base's tokenizer" in problem
    assert f"--local-dir {tmp_path / 'roberta-base'}" in problem
