"""Image preprocessing with OpenCV and numpy, reproducing an open_clip model's own preprocess config.

open_clip's transform goes through PIL and torchvision (about 3.5 ms for a 640x480 frame here); this
does the same resize, crop or pad, and normalization on arrays in well under a millisecond. A test
holds it to open_clip's transform: embeddings of the same pictures agree to a cosine of 0.999.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np


@dataclass(frozen=True)
class PreprocessSpec:
    size: tuple[int, int]  # (height, width)
    resize_mode: str  # "shortest" (resize, center-crop), "longest" (resize, pad), or "squash"
    interpolation: str  # "bicubic" or "bilinear"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    fill_color: int = 0

    @classmethod
    def from_open_clip(cls, cfg: dict[str, Any]) -> PreprocessSpec:
        size = cfg["size"]
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        return cls(
            size=(int(height), int(width)),
            resize_mode=cfg.get("resize_mode", "shortest"),
            interpolation=cfg.get("interpolation", "bicubic"),
            mean=tuple(cfg["mean"]),
            std=tuple(cfg["std"]),
            fill_color=int(cfg.get("fill_color", 0)),
        )


def preprocess(image: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """An RGB uint8 (height, width, 3) picture to the model's normalized float32 (3, height, width)."""
    target_h, target_w = spec.size
    height, width = image.shape[:2]
    if spec.resize_mode == "squash":
        resized = _resize(image, target_w, target_h, spec.interpolation)
    elif spec.resize_mode == "longest":
        scale = min(target_h / height, target_w / width)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        resized = _pad_center(_resize(image, new_w, new_h, spec.interpolation), target_h, target_w, spec.fill_color)
    else:
        new_w, new_h = _shortest_side_size(width, height, target_h, target_w)
        resized = _center_crop(_resize(image, new_w, new_h, spec.interpolation), target_h, target_w)
    pixels = resized.astype(np.float32) * (1 / 255.0)
    pixels -= np.asarray(spec.mean, dtype=np.float32)
    pixels /= np.asarray(spec.std, dtype=np.float32)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def _shortest_side_size(width: int, height: int, target_h: int, target_w: int) -> tuple[int, int]:
    if target_h == target_w:  # torchvision's Resize(int): the short side to size, the long one truncated
        size = target_h
        if width <= height:
            return size, int(size * height / width)
        return int(size * width / height), size
    scale = max(target_h / height, target_w / width)
    return max(target_w, round(width * scale)), max(target_h, round(height * scale))


def _resize(image: np.ndarray, width: int, height: int, interpolation: str) -> np.ndarray:
    if (width, height) == (image.shape[1], image.shape[0]):
        return image
    shrinking = width < image.shape[1] and height < image.shape[0]
    # PIL, which open_clip's transform uses, filters over the whole source footprint when shrinking;
    # OpenCV's area interpolation does the same, its cubic one would alias.
    upscale = cv2.INTER_CUBIC if interpolation == "bicubic" else cv2.INTER_LINEAR
    flag = cv2.INTER_AREA if shrinking else upscale
    out: np.ndarray = cv2.resize(image, (width, height), interpolation=flag)
    return out


def _center_crop(image: np.ndarray, height: int, width: int) -> np.ndarray:
    top = round((image.shape[0] - height) / 2.0)  # torchvision's CenterCrop rounds the same way
    left = round((image.shape[1] - width) / 2.0)
    return image[top : top + height, left : left + width]


def _pad_center(image: np.ndarray, height: int, width: int, fill: int) -> np.ndarray:
    out = np.full((height, width, 3), fill, dtype=image.dtype)
    top = (height - image.shape[0]) // 2
    left = (width - image.shape[1]) // 2
    out[top : top + image.shape[0], left : left + image.shape[1]] = image
    return out
