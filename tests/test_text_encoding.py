"""Cutting padding off the text tower must give the stock results, to float precision."""

from typing import Any

import numpy as np
import pytest
import torch

from server.devmodels import write_open_clip
from server.encoders import ModelSpec, build_encoder

PROMPTS = [
    "a photo of a dog.",
    "a photo of a very small and extremely fluffy golden retriever puppy sitting on a red sofa!",
    "!",
    "a",
    "x " * 100,  # longer than the context: truncated by the tokenizer
    "a photo of a cat.",
] * 3


def stock_clip(encoder: Any, prompts: list[str]) -> np.ndarray:
    with torch.inference_mode():
        return encoder.model.encode_text(encoder.tokenizer(prompts), normalize=True).numpy()


def test_clip_cut_text_matches_stock_encode_text(image_model):
    encoder = build_encoder(ModelSpec("image", image_model))
    fast = encoder.encode_text(PROMPTS)
    assert np.abs(fast - stock_clip(encoder, PROMPTS)).max() < 1e-5


def test_clip_cut_text_matches_stock_on_the_real_vit_b_32_architecture(tmp_path):
    encoder = build_encoder(ModelSpec("image", f"local-dir:{write_open_clip(tmp_path / 'b32', 'ViT-B-32')}"))
    fast = encoder.encode_text(PROMPTS)
    assert fast.shape == (len(PROMPTS), 512)
    assert np.abs(fast - stock_clip(encoder, PROMPTS)).max() < 1e-5


def test_clap_text_padded_to_longest_matches_padding_to_77(audio_model):
    encoder = build_encoder(ModelSpec("audio", audio_model))
    assert len(encoder.processor.tokenizer) > 100  # transformers 5 can silently build an empty tokenizer
    fast = encoder.encode_text(PROMPTS)
    tokens = encoder.processor.tokenizer(
        PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
    )
    with torch.inference_mode():
        stock = encoder.model.get_text_features(**tokens).pooler_output.numpy()
    assert np.abs(fast - stock).max() < 1e-5


@pytest.mark.parametrize("count", [1, 300])
def test_text_embeddings_are_unit_rows(image_model, count):
    encoder = build_encoder(ModelSpec("image", image_model))
    out = encoder.encode_text([f"label number {i}" for i in range(count)])
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
