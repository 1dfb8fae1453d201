"""OpenCV preprocessing must match open_clip's own transform where it matters: the embeddings."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from server.devmodels import write_open_clip
from server.encoders import ModelSpec, build_encoder
from server.preprocess import PreprocessSpec, preprocess

from .helpers import REPO

PICTURES = sorted((REPO / "samples").glob("*.jpg"))


@pytest.fixture(scope="module")
def b32(tmp_path_factory) -> Any:
    folder = write_open_clip(tmp_path_factory.mktemp("b32") / "model", "ViT-B-32")
    return build_encoder(ModelSpec("image", f"local-dir:{folder}"))


def embed(encoder: Any, batch: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return encoder.model.encode_image(batch, normalize=True).numpy()


@pytest.mark.parametrize("path", PICTURES, ids=lambda p: p.name)
def test_embeddings_match_open_clips_transform(b32, path: Path):
    picture = Image.open(path).convert("RGB")
    reference = embed(b32, b32.preprocess(picture)[None])
    fast = embed(b32, b32.prepare([np.asarray(picture)]))
    assert float((reference * fast).sum()) >= 0.999


def test_same_geometry_as_open_clip_for_odd_sizes(b32):
    rng = np.random.default_rng(1)
    for height, width in [(480, 640), (640, 480), (225, 1000), (100, 90), (224, 224)]:
        picture = rng.integers(0, 255, (height, width, 3), np.uint8)
        smooth = np.asarray(Image.fromarray(picture).resize((width // 8 + 1, height // 8 + 1)).resize((width, height)))
        reference = b32.preprocess(Image.fromarray(smooth)).numpy()
        fast = preprocess(smooth, b32.spec)
        assert fast.shape == reference.shape == (3, 224, 224)
        assert np.abs(fast - reference).mean() < 0.05  # same crop and scale; filters differ only slightly


@pytest.mark.parametrize("mode", ["longest", "squash"])
def test_other_resize_modes(mode):
    spec = PreprocessSpec((32, 32), mode, "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), fill_color=0)
    picture = np.full((20, 80, 3), 255, np.uint8)
    out = preprocess(picture, spec)
    assert out.shape == (3, 32, 32)
    if mode == "longest":  # 80x20 -> 32x8, padded top and bottom with black (-1 after normalization)
        assert np.allclose(out[:, :12], -1) and np.allclose(out[:, 12:20], 1, atol=0.02)
    else:
        assert np.allclose(out, 1, atol=0.02)
