"""Preprocessing must match the model's own: open_clip's transform where it matters (the embeddings), and
transformers' image processors to the pixel."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
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


# --- transformers image processors (server/hf_clip.py) ---------------------------------------------------------

ODD_SIZES = [(480, 640), (640, 480), (225, 1000), (33, 400), (100, 90), (224, 224), (10, 7)]


def smooth_picture(height: int, width: int, seed: int = 1) -> np.ndarray:
    coarse = np.random.default_rng(seed).integers(0, 255, (height // 8 + 1, width // 8 + 1, 3), np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_transformers_processors_are_reproduced_to_the_pixel(kind):
    from transformers import CLIPImageProcessor, SiglipImageProcessor

    processor = CLIPImageProcessor() if kind == "clip" else SiglipImageProcessor()
    spec = PreprocessSpec.from_transformers(processor)
    assert (spec.size, spec.resize_mode) == ((224, 224), "shortest" if kind == "clip" else "squash")
    for height, width in ODD_SIZES:
        picture = smooth_picture(height, width)
        expected = processor(images=picture, return_tensors="np")["pixel_values"][0]
        assert np.abs(preprocess(picture, spec) - expected).max() < 1e-5, (height, width)


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"crop_size": {"height": 200, "width": 200}}, "crop_size"),
        ({"do_center_crop": False}, "do_center_crop"),
        ({"resample": 0}, "resample"),
        ({"do_rescale": False}, "rescale"),
        ({"size": {"longest_edge": 224}}, "size"),
    ],
)
def test_processor_settings_not_reproduced_are_named(settings, named):
    from transformers import CLIPImageProcessor

    with pytest.raises(ValueError, match=named):
        PreprocessSpec.from_transformers(CLIPImageProcessor(**settings))


def test_naflex_patches_are_siglip2s_own():
    from transformers import Siglip2ImageProcessor

    from server.naflex import NaflexSpec, patches

    processor = Siglip2ImageProcessor(max_num_patches=256)
    spec = NaflexSpec(16, 256, "bilinear", (0.5,) * 3, (0.5,) * 3)  # what hf_clip.image_spec makes of it
    for height, width in ODD_SIZES:
        picture = smooth_picture(height, width)
        expected = processor(images=picture, return_tensors="np")
        found = patches(picture, spec)
        assert found.spatial_shape == tuple(expected["spatial_shapes"][0]), (height, width)
        np.testing.assert_array_equal(found.mask, expected["pixel_attention_mask"][0])
        assert np.abs(found.pixels - expected["pixel_values"][0]).max() < 1e-5, (height, width)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 5000), st.integers(1, 5000), st.sampled_from([64, 256, 576, 1024]), st.sampled_from([14, 16]))
def test_naflex_sizes_are_transformers_to_the_pixel(height, width, budget, patch):
    from transformers.models.siglip2.image_processing_siglip2 import get_image_size_for_max_num_patches

    from server.naflex import target_size

    assert target_size(height, width, patch, budget) == get_image_size_for_max_num_patches(height, width, patch, budget)
