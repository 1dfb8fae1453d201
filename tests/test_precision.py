"""Every precision is held to torch fp32 through the real loading paths, on the samples' pictures and sounds."""

from pathlib import Path

import numpy as np
import pytest

from server.audio import decode_sound_file, resample
from server.cpu import BF16_MIN_SPEEDUP, choose_cpu_precision, cpu_info
from server.encoders import ModelSpec, build_encoder, resolve_precision
from server.imaging import decode_image, sniff_image_format

from .helpers import REPO

SAMPLES = REPO / "samples"


def pictures() -> list[np.ndarray]:
    out = []
    for path in sorted(SAMPLES.glob("*.jpg")):
        data = path.read_bytes()
        out.append(decode_image(data, sniff_image_format(data) or "jpeg", 10**8))
    return out


def sounds(rate: int) -> list[np.ndarray]:
    out = []
    for path in sorted([*SAMPLES.glob("*.wav"), *SAMPLES.glob("*.flac")]):
        samples, source_rate = decode_sound_file(Path(path).read_bytes())
        out.append(resample(samples, source_rate, rate)[: 5 * rate])
    return out


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("precision", ["bf16"])
def test_image_and_text_embeddings_hold_to_fp32(image_model, precision):
    reference = build_encoder(ModelSpec("image", image_model))
    other = build_encoder(ModelSpec("image", image_model, precision=precision))
    assert (other.precision, reference.precision) == (precision, "fp32")
    assert other.identity != reference.identity  # label caches are keyed by precision
    batch = pictures()
    assert len(batch) >= 4
    assert cosines(reference.encode(reference.prepare(batch)), other.encode(other.prepare(batch))).min() >= 0.999
    prompts = ["a photo of a cat.", "a rocket launch", "a cup of coffee on a desk"]
    assert cosines(reference.encode_text(prompts), other.encode_text(prompts)).min() >= 0.999


@pytest.mark.parametrize("precision", ["bf16"])
def test_audio_and_text_embeddings_hold_to_fp32(audio_model, precision):
    reference = build_encoder(ModelSpec("audio", audio_model))
    other = build_encoder(ModelSpec("audio", audio_model, precision=precision))
    assert other.precision == precision and other.identity != reference.identity
    batch = sounds(reference.sample_rate or 48000)
    assert len(batch) >= 3
    assert cosines(reference.encode(reference.prepare(batch)), other.encode(other.prepare(batch))).min() >= 0.999
    prompts = ["This is a sound of a dog barking.", "This is a sound of speech."]
    assert cosines(reference.encode_text(prompts), other.encode_text(prompts)).min() >= 0.999


def test_auto_precision_follows_the_machine():
    assert resolve_precision("auto", "cuda") == "fp16"
    assert resolve_precision("auto", "cpu") in ("fp32", "bf16")
    if not {"amx_bf16", "avx512_bf16"} & set(cpu_info()["flags"]):
        assert resolve_precision("auto", "cpu") == "fp32"  # emulated bf16 is never chosen
    with pytest.raises(ValueError, match="fp16 needs --device cuda"):
        resolve_precision("fp16", "cpu")


def test_bf16_is_chosen_only_with_units_and_a_faster_probe():
    def never() -> float:
        raise AssertionError("no units: no probe")

    assert choose_cpu_precision(False, never) == "fp32"
    assert choose_cpu_precision(True, lambda: BF16_MIN_SPEEDUP + 0.5) == "bf16"
    assert choose_cpu_precision(True, lambda: 1.0) == "fp32"
