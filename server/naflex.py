"""SigLIP 2 NaFlex preprocessing, Sans-I/O: a picture to a padded sequence of patches, as Siglip2ImageProcessor
makes it, through server/preprocess.py.

A NaFlex model takes each picture at its own aspect ratio: it is resized so that it holds at most
``max_num_patches`` patches of ``patch_size`` pixels (each side a multiple of the patch), normalized, cut into
patches and padded to ``max_num_patches`` rows; a mask marks the real rows and ``spatial_shape`` the grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .preprocess import PreprocessSpec, preprocess


@dataclass(frozen=True)
class NaflexSpec:
    patch_size: int
    max_num_patches: int
    interpolation: str  # "bilinear" or "bicubic"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def square_side(self) -> int:
        """The side of a square picture's target: no target's shorter side is longer."""
        return self.patch_size * math.isqrt(self.max_num_patches)


@dataclass(frozen=True)
class Patches:
    """One picture, ready for the model: what ``Siglip2ImageProcessor`` returns for it."""

    pixels: np.ndarray  # (max_num_patches, patch_size * patch_size * 3) float32, real rows first
    mask: np.ndarray  # (max_num_patches,) int32: 1 for the real rows
    spatial_shape: tuple[int, int]  # (rows, columns) of patches


def target_size(height: int, width: int, patch_size: int, max_num_patches: int, eps: float = 1e-5) -> tuple[int, int]:
    """transformers' get_image_size_for_max_num_patches: the largest scale (found by bisection, as there, so the
    sizes agree to the pixel) at which the picture, each side rounded up to whole patches, fits the budget."""

    def scaled(scale: float, size: int) -> int:
        return max(patch_size, math.ceil(size * scale / patch_size) * patch_size)

    low, high = eps / 10, 100.0
    while high - low >= eps:
        scale = (low + high) / 2
        if (scaled(scale, height) / patch_size) * (scaled(scale, width) / patch_size) <= max_num_patches:
            low = scale
        else:
            high = scale
    return scaled(low, height), scaled(low, width)


def patches(image: np.ndarray, spec: NaflexSpec) -> Patches:
    """An RGB uint8 (height, width, 3) picture to its padded patch sequence."""
    height, width = target_size(image.shape[0], image.shape[1], spec.patch_size, spec.max_num_patches)
    pixels = preprocess(
        image,
        PreprocessSpec((height, width), "squash", spec.interpolation, spec.mean, spec.std, follows="transformers"),
    )
    rows, columns, side = height // spec.patch_size, width // spec.patch_size, spec.patch_size
    # (3, rows*side, columns*side) -> (rows*columns, side*side*3), each patch's pixels in (y, x, channel) order.
    grid = pixels.reshape(3, rows, side, columns, side).transpose(1, 3, 2, 4, 0).reshape(rows * columns, -1)
    out = np.zeros((spec.max_num_patches, grid.shape[1]), dtype=np.float32)
    out[: len(grid)] = grid
    mask = np.zeros(spec.max_num_patches, dtype=np.int32)
    mask[: len(grid)] = 1
    return Patches(out, mask, (rows, columns))
